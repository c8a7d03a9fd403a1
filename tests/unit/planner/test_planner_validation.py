"""The planner against published measurements (data/calibration/*.csv): the error per row,
with targets on the rows no factor was fitted to."""

from __future__ import annotations

import statistics
from functools import cache

from sovllm.planner.validation import RowError, calibration_files, evaluate, load_rows

# Rows more than 2x off, explained in docs/planner.md ("Known misses"): 2024 ROCm vLLM runs of
# Llama-3.1-405B on 8xMI300X at high concurrency, which the roofline over-predicts.
KNOWN_MISSES = {"mi300x-405b-8x-bs256-thr", "mi300x-405b-8x-offline-thr"}


@cache
def _errors() -> tuple[RowError, ...]:
    return tuple(evaluate())


def _held_out(metric_prefix: str) -> list[RowError]:
    return [e for e in _errors() if not e.fitted and e.row.metric.startswith(metric_prefix)]


def test_the_shared_calibration_file_is_shipped_with_sources() -> None:
    assert calibration_files()
    rows = load_rows()
    assert len(rows) >= 23
    assert all(r.source for r in rows)
    assert len({r.id for r in rows}) == len(rows)


def test_fitted_rows_are_reproduced_and_most_rows_are_held_out() -> None:
    errors = _errors()
    fitted = [e for e in errors if e.fitted]
    assert 0 < len(fitted) <= 7
    assert len(errors) - len(fitted) >= 16
    for e in fitted:
        assert abs(e.error_pct) < 5, e.row.id


def test_tpot_median_error_on_held_out_rows_within_15_percent() -> None:
    rows = _held_out("tpot")
    assert rows
    assert statistics.median(abs(e.error_pct) for e in rows) <= 15


def test_ttft_median_error_on_held_out_rows_within_25_percent() -> None:
    rows = _held_out("ttft")
    assert rows
    assert statistics.median(abs(e.error_pct) for e in rows) <= 25


def test_throughput_median_error_on_held_out_nvidia_rows_within_15_percent() -> None:
    rows = [e for e in _held_out("output_tokens_per_s") if "mi300x" not in e.row.gpu]
    assert rows
    assert statistics.median(abs(e.error_pct) for e in rows) <= 15


def test_throughput_median_error_on_all_held_out_rows_is_what_the_docs_report() -> None:
    # The 15% target is missed here because of the MI300X rows; docs/planner.md says
    # so. This guards against the error growing further.
    rows = _held_out("output_tokens_per_s")
    assert statistics.median(abs(e.error_pct) for e in rows) <= 30


def test_no_row_is_off_by_more_than_2x_except_the_documented_misses() -> None:
    off = {e.row.id for e in _errors() if max(e.ratio, 1 / e.ratio) > 2}
    assert off <= KNOWN_MISSES
    for e in _errors():
        assert max(e.ratio, 1 / e.ratio) < 3, e.row.id
