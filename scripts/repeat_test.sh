#!/usr/bin/env bash
# Run one pytest node id N times in a row (default 20), each in a fresh pytest process, going
# on whatever a run's result; print each run's result and the total "N passed, M failed"; exit
# non-zero if any run failed. A run passes only if pytest exits 0 having passed, not skipped.
#
#   scripts/repeat_test.sh NODE_ID [N]
#   scripts/repeat_test.sh tests/integration/test_pool.py::test_sigkill_one_of_three_under_50_streams
#
# Each run's output is kept in $REPEAT_DIR (default: a new /tmp/repeat.XXXXXX); a failed run
# also keeps its pytest temporary directory, where the servers' and workers' logs are.
set -uo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/repeat_test.sh NODE_ID [N]"
node=${1:?$usage}
count=${2:-20}
if ! [[ $count =~ ^[1-9][0-9]*$ ]]; then
  echo "N must be a positive whole number, not '$count'. $usage" >&2
  exit 2
fi
pytest=.venv/bin/pytest
if [ ! -x "$pytest" ]; then
  echo "$pytest is missing: run 'make install' first" >&2
  exit 2
fi
dir=${REPEAT_DIR:-$(mktemp -d /tmp/repeat.XXXXXX)}
mkdir -p "$dir"
echo "$node, $count runs; output in $dir"

passed=0
failed=0
start=$SECONDS
for ((i = 1; i <= count; i++)); do
  began=$SECONDS
  log="$dir/run-$i.log"
  "$pytest" "$node" -q -rs -p no:cacheprovider --basetemp="$dir/run-$i" >"$log" 2>&1
  rc=$?
  summary=$(grep -v "^[[:space:]]*$" "$log" | tail -n 1)
  if [ "$rc" -eq 0 ] && [[ $summary == *" passed"* ]] && [[ $summary != *skipped* ]]; then
    result=passed
    passed=$((passed + 1))
    rm -rf "$dir/run-$i"  # its logs are not needed: keep the disk for the failures'
  else
    result="FAILED (pytest exit $rc)"
    failed=$((failed + 1))
  fi
  echo "run $i/$count: $result in $((SECONDS - began)) s: $summary"
done
echo "$passed passed, $failed failed in $((SECONDS - start)) s"
[ "$failed" -eq 0 ]
