#!/usr/bin/env bash
# The long fuzzing run (issue #20): schemathesis drives every route of /openapi.json with
# 10,000 generated cases (valid and invalid) against a real server on the real model, with a key
# of each role and none. Same test as `make test`'s 500-case run (tests/integration/test_fuzz.py).
#
#   scripts/fuzz.sh [CASES] [SEED]     defaults: 10000, a random seed (printed; pass it to replay)
#
# The summary (cases, seed, seconds, answers by status, failures) goes to stdout and to
# results/fuzz-report.json; record the last one in docs/reliability.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
export SOVLLM_FUZZ_CASES="${1:-10000}"
export SOVLLM_FUZZ_SEED="${2:-}"
mkdir -p results  # ignored by git
export SOVLLM_FUZZ_REPORT="${SOVLLM_FUZZ_REPORT:-$PWD/results/fuzz-report.json}"
exec .venv/bin/pytest tests/integration/test_fuzz.py -x -q -s -p no:cacheprovider --timeout=0
