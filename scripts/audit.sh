#!/usr/bin/env bash
# `make audit`: known vulnerabilities of every package requirements.lock pins, with pip-audit
# (docs/reliability.md, "Supply chain"). Nothing is installed: --disable-pip audits the pins as
# they stand (the lock is complete and hashed). --strict makes a package the vulnerability
# service did not answer for fail the audit: without it pip-audit skips that package and still
# prints "No known vulnerabilities found", a green that audited nothing.
# AUDIT_SERVICE=osv asks OSV (api.osv.dev) instead of PyPI's JSON API.
set -uo pipefail
cd "$(dirname "$0")/.."
LOCK=${1:-requirements.lock}
BIN=${BIN:-.venv/bin}
SERVICE=${AUDIT_SERVICE:-pypi}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN/pip-audit" -r "$LOCK" --require-hashes --disable-pip --strict --progress-spinner off \
  --vulnerability-service "$SERVICE" >"$out" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
  cat "$out"
  echo "audit: $(grep -c '^[A-Za-z0-9].*==' "$LOCK") pins of $LOCK audited against $SERVICE: OK"
  exit 0
fi
unanswered=$(grep -o -m1 -e 'Dependency not found on PyPI and could not be audited: .*' \
  -e 'Failed to resolve [^)]*' -e 'ConnectionError.*' -e 'Read timed out[^)]*' "$out")
if [ -n "$unanswered" ]; then
  echo "audit: FAILED, nothing was audited: the vulnerability service ($SERVICE) did not answer." >&2
  echo "audit: first refusal: $unanswered" >&2
  if [ "$SERVICE" = pypi ]; then
    echo "audit: pip-audit asks https://pypi.org/pypi/NAME/VERSION/json; a 404 for a package" \
      "that exists means a proxy or mirror serves the packages but not PyPI's JSON API." \
      "Run it where pypi.org answers, or with AUDIT_SERVICE=osv where api.osv.dev does." >&2
  fi
  exit 1
fi
cat "$out"
exit "$rc"
