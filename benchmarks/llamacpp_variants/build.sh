#!/usr/bin/env bash
# Issue 15 item 3, first measurement (not part of `make install`): build llama-cpp-python
# 0.3.36's vendored llama.cpp as shared libraries with the CPU back-end in run-time-selected
# variants (GGML_BACKEND_DL, GGML_CPU_ALL_VARIANTS), then set aside the one variant that uses
# AMX. ggml scores variants by CPUID bits only (ggml-cpu/arch/x86/cpu-feats.cpp), never by what
# the kernel permits, so on a machine that advertises AMX and forbids it the sapphirerapids
# variant would be chosen and die. Usage: build.sh OUT_DIR (about 6 min on 2 cores), then
#   LLAMA_CPP_LIB_PATH=OUT_DIR/build/bin .venv/bin/python benchmarks/llamacpp_variants/limit_once.py ...
set -euo pipefail
OUT=${1:?usage: build.sh OUT_DIR}
mkdir -p "$OUT"
.venv/bin/python -m pip download --quiet --no-deps --no-binary :all: -d "$OUT" llama-cpp-python==0.3.36
tar -xzf "$OUT/llama_cpp_python-0.3.36.tar.gz" -C "$OUT"
SRC=$OUT/llama_cpp_python-0.3.36/vendor/llama.cpp
B=$OUT/build
cmake -S "$SRC" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_BACKEND_DIR="$B/bin" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF
cmake --build "$B" --target llama -j "$(nproc)"
mkdir -p "$OUT/aside"
mv "$B/bin/libggml-cpu-sapphirerapids.so" "$OUT/aside/"
# The proof that nothing left can execute an AMX instruction: none in any shipped variant.
for f in "$B"/bin/libggml-cpu-*.so; do
  n=$(objdump -d --no-show-raw-insn "$f" | grep -cE "\s(ldtilecfg|sttilecfg|tileloadd|tileloaddt1|tilestored|tilezero|tilerelease|tdpb[su][su]d|tdpbf16ps|tdpfp16ps)\b" || true)
  echo "$(basename "$f"): $n AMX instructions"
  [ "$n" -eq 0 ] || { echo "AMX instructions in $f" >&2; exit 1; }
done
