# Shared by the install scripts (scripts/peers/install.sh, scripts/llamacpp/build.sh): a step
# prints what it does and how long it took, runs under a timeout, and on failure names itself
# and shows the end of its log. The caller sets STEP_TAG (the prefix of every line) and LOGS.

fail() { echo "$STEP_TAG: $*" >&2; exit 1; }

# step NAME TIMEOUT_S COMMAND...: runs one step with its output in $LOGS/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local log=$LOGS/$name.log start=$SECONDS rc=0
  echo "$STEP_TAG: $name ..." >&2
  timeout --kill-after=30 "$limit" "$@" >"$log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "$STEP_TAG: $name did not finish within ${limit} s" >&2
    echo "$STEP_TAG: $name failed (exit $rc) after ${took} s; the end of $log:" >&2
    tail -n 15 "$log" >&2
    exit 1
  fi
  echo "$STEP_TAG: $name done in ${took} s" >&2
}

# cached NAME PATH: says a step is skipped because its result is present.
cached() { echo "$STEP_TAG: $1: present, reused ($2)" >&2; }
