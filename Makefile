# Two commands for a fresh machine: `make serve` and `make test`.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles from source. A -march=native build dies with "Illegal
# instruction" in this sandbox (the CPU advertises AMX, the sandbox forbids it), so
# build for a portable AVX2 baseline. pip caches the wheel: the ~6 min build is paid once.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
STAMP := $(VENV)/.installed

.PHONY: install serve test test-peers peers lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/sovllm serve $(ARGS)

# The real peers tests/peers runs against (vLLM for CPU, llama.cpp's llama-server, the model
# converted for each) go to ~/.cache/sovllm/peers ($$SOVLLM_PEERS_DIR), like pip's wheel cache:
# a fresh machine pays the install once, later runs reuse it in seconds.
peers: $(STAMP)
	scripts/peers/install.sh

test: $(STAMP) peers
	scripts/test.sh

test-peers: $(STAMP) peers
	$(BIN)/pytest -m peers tests/peers

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
