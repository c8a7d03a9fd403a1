#!/usr/bin/env bash
# sovllm serve with its embedded engine on a model file, driven by sovllm bench at several
# numbers of requests in flight (512 prompt tokens, 128 forced output tokens: the shape of
# run.sh's llama-batched-bench rows, so the two compare).
#
#   MODEL=F.gguf OUT=DIR [LIB=llama.cpp build's lib folder] [GPU_LAYERS=-1] [LEVELS="1 8 32"] \
#     [DURATION=15] [PYTHON=python3] bash benchmarks/llamacpp_gpu/serve_bench.sh
#
# LIB becomes LLAMA_CPP_LIB_PATH (a CUDA build there: run.sh leaves one in $BUILD/bin). Writes
# serve.log, bench-cN.{json,jsonl,html,log} per level, metrics.txt (the server's /metrics after the
# runs) and gpu-samples.csv (nvidia-smi once a second, where there is one) under $OUT.
set -euo pipefail
MODEL=${MODEL:?set MODEL}
OUT=${OUT:?set OUT}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-8000}
mkdir -p "$OUT"
data=$(mktemp -d)
export SOVLLM_DATA_DIR=$data SOVLLM_ENGINE__GPU_LAYERS=${GPU_LAYERS:--1}
[ -z "${LIB:-}" ] || export LLAMA_CPP_LIB_PATH=$LIB
phase() { echo "== $(date +%T) $*"; }

phase "sovllm serve $MODEL (engine.gpu_layers=$SOVLLM_ENGINE__GPU_LAYERS)"
"$PYTHON" -m sovllm serve --port "$PORT" --model "$MODEL" >"$OUT/serve.log" 2>&1 &
server=$!
sampler=
cleanup() {  # keeps the script's own exit status, not the stopped server's
  local status=$?
  kill -TERM "$server" 2>/dev/null && { wait "$server" || true; }
  [ -z "$sampler" ] || kill "$sampler" 2>/dev/null
  rm -rf "$data"
  exit "$status"
}
trap cleanup EXIT
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw,clocks.sm \
    --format=csv -l 1 >"$OUT/gpu-samples.csv" 2>/dev/null &
  sampler=$!
fi
# Ready within START_S (loading and hashing the weights), or the server's log says why not.
"$PYTHON" - "$PORT" "$server" "${START_S:-300}" <<'EOF' || { tail -30 "$OUT/serve.log"; exit 1; }
import os, sys, time, urllib.request
port, pid, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the server exited")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(f"not ready after {limit} s")
EOF
phase ready
grep -i -E "back-end|offload|gpu|cuda" "$OUT/serve.log" | head -20 || true
key=$("$PYTHON" -m sovllm keys bootstrap --print)

for c in ${LEVELS:-1 8 32}; do
  phase "sovllm bench --concurrency $c"
  "$PYTHON" -m sovllm bench --url "http://127.0.0.1:$PORT/v1" --api-key "$key" \
    --concurrency "$c" --prompt-tokens 512 --output-tokens 128 --duration "${DURATION:-15}" \
    --warmup 3 --seed 1 --out "$OUT/bench-c$c" >"$OUT/bench-c$c.log" 2>&1 ||
    { tail -20 "$OUT/bench-c$c.log"; exit 1; }
  "$PYTHON" - "$OUT/bench-c$c.json" <<'EOF' || true
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
lat, thr = s["latency_s"], s["throughput"]
print(f"  {s['requests']['ok']} ok, {s['requests']['error']} errors; "
      f"{thr['output_tokens_per_s']} output tok/s; TTFT p50 {lat['ttft'].get('p50')} "
      f"p95 {lat['ttft'].get('p95')} s; TPOT p50 {lat['tpot'].get('p50')} s")
EOF
done
"$PYTHON" - "$PORT" "$key" >"$OUT/metrics.txt" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/metrics",
                             headers={"Authorization": f"Bearer {sys.argv[2]}"})
print(urllib.request.urlopen(req, timeout=10).read().decode())
EOF
phase done
