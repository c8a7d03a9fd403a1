# Two commands for a fresh machine: `make serve` and `make test`.
# Both create .venv when it is missing and install into it exactly what requirements.lock pins.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles from source. A -march=native build dies with "Illegal
# instruction" in this sandbox (the CPU advertises AMX, the sandbox forbids it), so
# build for a portable AVX2 baseline. pip caches the wheel: the ~6 min build is paid once
# (in hash-checking mode too: the cached wheel records its sdist's SHA-256, which pip matches).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
STAMP := $(VENV)/.installed
# Every package, its version and its files' SHA-256 (docs/reliability.md, "Supply chain"):
# the project's dependencies and its dev extra, compiled by `make lock`.
LOCK := requirements.lock
SBOM ?= build/sbom.cdx.json

.PHONY: install serve test test-peers peers lint bench clean lock audit sbom

# pip itself first, pinned and hash-checked from the lock (its block: the pin and its hashes),
# then everything else exactly as locked, then sovllm itself with no dependency of its own.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk '/^pip==/{p=1} p{print} p&&!/\\$$/{exit}' $(LOCK) > $(VENV)/pip.lock
	$(BIN)/python -m pip install --quiet --require-hashes -r $(VENV)/pip.lock
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# llama.cpp again, for the engine: the CPU back-end in variants chosen at run time (AVX-512 where
# the CPU has it, never AMX), cached in ~/.cache/sovllm/llama.cpp like the wheel; .venv links it.
# About 5 min once per machine (scripts/llamacpp/build.sh; native.py loads it).
LLAMA_BUILD := $(VENV)/lib/sovllm-llama.cpp/.built

$(LLAMA_BUILD): $(STAMP) scripts/llamacpp/build.sh scripts/lib/llamacpp.sh scripts/lib/steps.sh
	scripts/llamacpp/build.sh

install: $(STAMP) $(LLAMA_BUILD)

serve: install
	$(BIN)/sovllm serve $(ARGS)

# The real peers tests/peers runs against (vLLM for CPU, llama.cpp's llama-server, the model
# converted for each) go to ~/.cache/sovllm/peers ($$SOVLLM_PEERS_DIR), like pip's wheel cache:
# a fresh machine pays the install once, later runs reuse it in seconds.
peers: install
	scripts/peers/install.sh

test: install peers
	scripts/test.sh

test-peers: install peers
	$(BIN)/pytest -m peers tests/peers

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/engine_throughput.py

# Recompile the lock from pyproject.toml with the pinned uv, for the platform `make serve` runs
# on. Versions already pinned stay unless pyproject.toml excludes them; `make lock UPGRADE=1`
# moves every package to its newest allowed version. Needs PyPI.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --quiet \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) -o $(LOCK)
	$(BIN)/python scripts/check_lock.py

# Known vulnerabilities of every pinned package (PyPI's advisory database, over the network).
audit: $(STAMP)
	BIN=$(BIN) scripts/audit.sh $(LOCK)

# A CycloneDX SBOM of .venv, with the served model (name, SHA-256, licence) as a component.
sbom: install
	$(BIN)/python scripts/sbom.py --out $(SBOM) $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
