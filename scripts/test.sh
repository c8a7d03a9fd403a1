#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (unit and integration, real model).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
$BIN/ruff format --check src tests benchmarks
$BIN/ruff check src tests benchmarks
$BIN/mypy
exec $BIN/pytest "$@"
