#!/usr/bin/env bash
# Measure llama.cpp (CUDA) on one NVIDIA GPU with a random-weight Llama-3.1-8B, for the planner's
# `llamacpp` engine rows (src/sovllm/planner/data/calibration/*.csv, see docs/planner.md).
#
#   SRC=.devwork/llama.cpp OUT=/some/dir bash benchmarks/llamacpp_gpu/run.sh
#
# SRC is a llama.cpp source tree (benchmarks/llamacpp_gpu/prepare_source.sh cuts one from the
# llama-cpp-python sdist the project pins). Needs nvcc with cuBLAS, cmake, ninja, python3 with
# numpy and PyYAML. Writes bench-*.jsonl (llama-bench), batched-*.jsonl (llama-batched-bench),
# gpu.csv, files.txt and the logs under $OUT. Each phase prints its time; a rerun picks up where
# a cut-short run stopped (files are written under a temporary name and renamed when complete).
# The build also leaves llama.cpp's shared libraries in $BUILD/bin, for llama-cpp-python
# (LLAMA_CPP_LIB_PATH): device.sh serves from them. VOCAB (a dump_vocab.py JSON) gives the model
# a real tokenizer, padded to Llama-3.1-8B's vocabulary; REPEATS sets llama-bench's -r (5).
set -euo pipefail
SRC=${SRC:-.devwork/llama.cpp}
OUT=${OUT:?set OUT}
BUILD=${BUILD:-.devwork/build-cuda}
here=$(cd "$(dirname "$0")" && pwd)
models=${MODELS:-/dev/shm/sovllm-llamacpp}
if [ -z "${MODELS:-}" ] && [ "$(df --output=avail -k /dev/shm | tail -1)" -lt 40000000 ]; then
  models=/tmp/sovllm-llamacpp
fi
mkdir -p "$OUT" "$models"
phase() { echo "== $(date +%T) $*"; }

# CUDA=OFF builds for the CPU alone: a dry run of the whole script on a machine with no GPU
# (with MODEL_ARGS="--layers 2 --hidden 256 ..." for a small model).
cuda=${CUDA:-ON}
arch=
if [ "$cuda" = ON ]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,power.limit,driver_version \
    --format=csv | tee "$OUT/gpu.csv"
  arch=${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
else
  printf 'name\nCPU only (CUDA=OFF)\n' >"$OUT/gpu.csv"
fi

# The random model is written on the CPU while nvcc builds: one process, mostly memory traffic.
model_pid=
if [ ! -e "$models/f16.gguf" ]; then
  ( python3 "$here/make_gguf.py" --gguf-py "$SRC/gguf-py" --out "$models/f16.gguf.tmp" \
      ${VOCAB:+--vocab-from "$VOCAB"} ${MODEL_ARGS:-} && mv "$models/f16.gguf.tmp" "$models/f16.gguf" ) \
    >"$OUT/make_gguf.log" 2>&1 &
  model_pid=$!
fi

phase "build (${arch:+sm_}${arch:-CPU only})"
extra=()
cuda_inc="$(dirname "$(command -v nvcc || echo /nonexistent/nvcc)")/../include"
if [ "$cuda" = ON ] && [ ! -e "$cuda_inc/cublas_v2.h" ]; then
  # Some images ship cuBLAS only as the nvidia-cublas wheel: point the build at it.
  wheel=$(python3 -c "import nvidia.cublas as c, os; print(os.path.dirname(c.__file__))" 2>/dev/null) ||
    { echo "no cuBLAS: neither $cuda_inc/cublas_v2.h nor the nvidia-cublas wheel"; exit 1; }
  echo "cuBLAS from the wheel at $wheel"
  export CPATH="$wheel/include${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$wheel/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$wheel/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  extra=(-DCUDA_cublas_LIBRARY="$(ls "$wheel"/lib/libcublas.so* | head -1)"
         -DCUDA_cublasLt_LIBRARY="$(ls "$wheel"/lib/libcublasLt.so* | head -1)")
fi
[ -z "$arch" ] || extra+=(-DCMAKE_CUDA_ARCHITECTURES="$arch")
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA="$cuda" \
  -DLLAMA_OPENSSL=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_APP=OFF "${extra[@]}" >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target llama llama-bench llama-batched-bench llama-quantize \
  >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
bin=$BUILD/bin

phase "model (written during the build)"
[ -z "$model_pid" ] || wait "$model_pid" || { echo "make_gguf.py failed: $(tail -5 "$OUT/make_gguf.log")"; exit 1; }
for q in ${QUANTS:-Q8_0 Q4_0}; do
  if [ ! -e "$models/$q.gguf" ]; then
    "$bin/llama-quantize" "$models/f16.gguf" "$models/$q.gguf.tmp" "$q" "$(nproc)" \
      >"$OUT/quantize-$q.log" 2>&1 || { tail -20 "$OUT/quantize-$q.log"; exit 1; }
    mv "$models/$q.gguf.tmp" "$models/$q.gguf"
  fi
done
ls -l "$models" | tee "$OUT/files.txt"
# MEASURE=0: build and write the models only (device.sh's second try serves from them).
if [ "${MEASURE:-1}" = 0 ]; then phase done; exit 0; fi

# Batch 1: prefill of 512 and 2048 tokens from an empty cache (TTFT); 128 tokens decoded after a
# 512-token prompt (TPOT). Flash attention on, every layer on the GPU, llama.cpp's default
# batch (2048) and micro-batch (512).
for m in f16 Q8_0 Q4_0; do
  phase "llama-bench $m"
  "$bin/llama-bench" -m "$models/$m.gguf" -ngl 99 -fa 1 -p 512,2048 -n 0 -r "${REPEATS:-5}" -o jsonl \
    >"$OUT/bench-$m.jsonl.tmp" 2>"$OUT/bench-$m.log"
  "$bin/llama-bench" -m "$models/$m.gguf" -ngl 99 -fa 1 -p 0 -n 128 -d 512 -r "${REPEATS:-5}" -o jsonl \
    >>"$OUT/bench-$m.jsonl.tmp" 2>>"$OUT/bench-$m.log"
  mv "$OUT/bench-$m.jsonl.tmp" "$OUT/bench-$m.jsonl"
done

# Offline batches: B sequences of 512 prompt tokens each, prefilled together, then 128 tokens
# decoded together.
for m in f16 Q4_0; do
  phase "llama-batched-bench $m"
  "$bin/llama-batched-bench" -m "$models/$m.gguf" -ngl 99 -fa on -c 32768 -b 2048 -ub 512 \
    -npp 512 -ntg 128 -npl 1,8,32 --output-format jsonl 2>&1 | tee "$OUT/batched-$m.log" |
    grep '^{' >"$OUT/batched-$m.jsonl"
done
phase done
