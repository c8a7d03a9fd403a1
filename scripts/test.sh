#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (unit, integration and browser, real model).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
# The database tests run against a real PostgreSQL too: install it when it is missing.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# The browser tests drive Debian's Chromium through Playwright, never a downloaded browser.
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# The compliance report's PDF is checked by its text, with poppler's pdftotext.
if ! command -v pdftotext >/dev/null 2>&1; then
  echo "installing poppler-utils (pdftotext) from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null
fi
# The alert rules are checked with the real promtool, and one test runs a real Prometheus.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing Prometheus from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
$BIN/python scripts/check_lock.py  # a requirements.lock pyproject.toml no longer matches fails CI
$BIN/ruff format --check src tests benchmarks
$BIN/ruff check src tests benchmarks
$BIN/mypy
exec $BIN/pytest "$@"
