#!/usr/bin/env bash
# Issue #15 item 7 as one call on a GPU host that has no network (the device tool):
#   1. run.sh: llama.cpp built with CUDA, and the planner's `llamacpp` rows measured on a
#      random-weight model of Llama-3.1-8B's shape (F16, Q8_0, Q4_0);
#   2. serve_bench.sh: `sovllm serve` with its embedded engine on the GPU (every layer
#      offloaded, the CUDA build through LLAMA_CPP_LIB_PATH) on the Q4_0 file, driven by
#      `sovllm bench` at 1, 8 and 32 requests in flight.
# The model carries SmolLM2's tokenizer (padded to Llama-3.1-8B's vocabulary), so sovllm bench's
# prompts are exact. Run benchmarks/llamacpp_gpu/prepare.sh here first; then, with .devwork
# carried:
#
#   bash benchmarks/llamacpp_gpu/device.sh        # OUT set by the device tool
#
# Everything lands in $OUT/results.tar.gz, packed again every 20 s and at the end, so a call cut
# short still brings back what it measured (the tool returns at most 8 files). MEASURE=0
# QUANTS=Q4_0 skips the calibration runs (a second try that only serves).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dev=$root/.devwork
OUT=${OUT:?set OUT}
work=${WORK:-/tmp/sovllm-device}
results=$work/results
mkdir -p "$results"
started=$(date +%s)
phase() { echo "== $(date +%T) (+$(($(date +%s) - started)) s) $*"; }

pack() {  # each packer its own temporary name: the periodic one may still run at the end
  local tmp=$OUT/.results.$BASHPID
  tar -C "$work" -czf "$tmp" results 2>/dev/null && mv "$tmp" "$OUT/results.tar.gz"
}
# Bounded by the tool's own 10-minute limit on a call, and by this loop's count.
( for _ in $(seq 40); do sleep 20; pack; done ) &
packer=$!
trap 'kill $packer 2>/dev/null; pack' EXIT

phase "unpack"
[ -d /usr/local/cuda/bin ] && export PATH=$PATH:/usr/local/cuda/bin
nproc; free -g | head -2; df -h /dev/shm /tmp | tail -2
tar -C "$work" -xzf "$dev/llama.cpp.tar.gz"
site=$work/site
mkdir -p "$site"
( for w in "$dev"/wheels/*.whl; do python3 -m zipfile -e "$w" "$site"; done
  tar -C "$site" -xzf "$dev/llama_cpp.tar.gz" ) &
unpacked=$!

models=${MODELS:-/dev/shm/sovllm-llamacpp}
if [ -z "${MODELS:-}" ] && [ "$(df --output=avail -k /dev/shm | tail -1)" -lt 40000000 ]; then
  models=/tmp/sovllm-llamacpp
fi
export MODELS=$models
SRC=$work/llama.cpp OUT=$results BUILD=$work/build VOCAB=$dev/vocab.json REPEATS=${REPEATS:-5} \
  bash "$here/run.sh" 2>&1 | tee "$results/run.log"
[ "${PIPESTATUS[0]}" = 0 ] || { phase "run.sh failed"; exit 1; }
pack

wait "$unpacked" || { phase "unpacking the wheels failed"; exit 1; }
phase "each layer of sovllm's llama.cpp path on its own (diagnose.py)"
PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} LLAMA_CPP_LIB_PATH=$work/build/bin \
  "${PYTHON:-python3}" "$here/diagnose.py" "$models/Q4_0.gguf" 2>&1 | tee "$results/diagnose.log"
pack

phase "sovllm serve on the GPU"
export PYTHONFAULTHANDLER=1  # a crash prints every thread's Python stack into serve.log
ln -sf "$models/Q4_0.gguf" "$work/llama-3.1-8b-random-q4_0.gguf"
serve() {  # serve NAME [VAR=VALUE...]: serve_bench.sh into $results/NAME, its exit status
  local name=$1
  shift
  env "$@" MODEL="$work/llama-3.1-8b-random-q4_0.gguf" OUT="$results/$name" \
    LIB="$work/build/bin" GPU_LAYERS="${GPU_LAYERS:--1}" PYTHON="${PYTHON:-python3}" \
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" bash "$here/serve_bench.sh" 2>&1 |
    tee "$results/$name-bench.log"
  return "${PIPESTATUS[0]}"
}
serve serve
status=$?
if [ "$status" != 0 ]; then
  # Session 12's crash came with the energy meter's NVML started first: try once without it.
  phase "serve_bench.sh failed ($status): again with SOVLLM_ENERGY__SOURCE=off"
  pack
  serve serve-energy-off SOVLLM_ENERGY__SOURCE=off
  status=$?
fi
phase "done (serve_bench.sh exit status $status)"
