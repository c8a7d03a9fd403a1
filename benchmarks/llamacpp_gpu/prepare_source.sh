#!/usr/bin/env bash
# Cut the llama.cpp source that run.sh builds out of the llama-cpp-python sdist this project
# installs (the same llama.cpp as the embedded engine), keeping only what llama-bench,
# llama-batched-bench and llama-quantize need with the CPU and CUDA backends (~19 MB, small
# enough to travel to a GPU host that has no network).
#
#   bash benchmarks/llamacpp_gpu/prepare_source.sh [DEST]      # DEST defaults to .devwork/llama.cpp
set -euo pipefail
dest=${1:-.devwork/llama.cpp}
# The folder is replaced: refuse one that holds anything but an earlier cut.
if [ -n "$(ls -A "$dest" 2>/dev/null)" ] && [ ! -d "$dest/tools/batched-bench" ]; then
  echo "$dest is not empty and is not an earlier cut of llama.cpp: not replacing it" >&2
  exit 2
fi
mkdir -p "$dest" && dest=$(cd "$dest" && pwd)
version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
rm -rf "$dest"
mkdir -p "$dest/tools" "$dest/ggml/src"
cp -r "$src"/{CMakeLists.txt,cmake,src,include,common,vendor,gguf-py,LICENSE} "$dest/"
cp -r "$src"/ggml/{CMakeLists.txt,cmake,include} "$dest/ggml/"
(cd "$src/ggml/src" && cp -r CMakeLists.txt ./*.c ./*.cpp ./*.h ./*.in ggml-cpu ggml-cuda "$dest/ggml/src/")
for t in batched-bench llama-bench quantize; do cp -r "$src/tools/$t" "$dest/tools/"; done
printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\n' >"$dest/tools/CMakeLists.txt"
printf 'add_subdirectory(%s)\n' batched-bench llama-bench quantize >>"$dest/tools/CMakeLists.txt"
rm -rf "$dest/vendor/miniaudio" "$dest/vendor/stb"
sed -i '/add_subdirectory(miniaudio)/d;/add_subdirectory(stb)/d' "$dest/vendor/CMakeLists.txt"
du -sh "$dest"
