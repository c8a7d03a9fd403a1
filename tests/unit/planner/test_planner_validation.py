"""The planner against published measurements (data/calibration/*.csv): the error per row,
with the issue's targets on the rows no factor was fitted to."""

from __future__ import annotations

import dataclasses
import statistics
from functools import cache

import pytest

from sovllm.planner.catalog import hardware_catalog
from sovllm.planner.validation import (
    RowError,
    calibration_files,
    evaluate,
    fitted_row_ids,
    load_corrections,
    load_rows,
    parse_load,
    scenario_for,
)

ORACLE_405B = {
    "mi300x-405b-8x-bs1-thr",
    "mi300x-405b-8x-bs32-thr",
    "mi300x-405b-8x-bs256-thr",
    "mi300x-405b-8x-offline-thr",
}


@cache
def _errors() -> tuple[RowError, ...]:
    return tuple(evaluate())


@cache
def _errors_as_labelled() -> tuple[RowError, ...]:
    return tuple(evaluate(corrected=False))


def _held_out(metric_prefix: str, errors: tuple[RowError, ...] | None = None) -> list[RowError]:
    errors = _errors() if errors is None else errors
    return [e for e in errors if not e.fitted and e.row.metric.startswith(metric_prefix)]


def _median_abs(rows: list[RowError]) -> float:
    assert rows
    return statistics.median(abs(e.error_pct) for e in rows)


def _worst(e: RowError) -> float:
    return max(e.ratio, 1 / e.ratio)


def test_the_shared_calibration_file_is_shipped_with_sources() -> None:
    assert calibration_files()
    rows = load_rows()
    assert len(rows) >= 23
    assert all(r.source for r in rows)
    assert len({r.id for r in rows}) == len(rows)


def test_fitted_rows_are_reproduced_and_most_rows_are_held_out() -> None:
    errors = _errors()
    fitted = [e for e in errors if e.fitted]
    assert 0 < len(fitted) <= 6
    assert len(errors) - len(fitted) >= 18
    for e in fitted:
        assert abs(e.error_pct) < 5, e.row.id


def test_no_factor_is_fitted_on_an_mi300x_row() -> None:
    # The MI300X rows are predicted with the NVIDIA-fitted engine factors and the spec sheet.
    assert not any(i.startswith(("mi300x", "mlperf")) for i in fitted_row_ids())
    assert hardware_catalog()["mi300x"].bandwidth_efficiency == 1.0


def test_every_correction_names_existing_rows_and_gives_its_evidence() -> None:
    ids = {r.id for r in load_rows()}
    corrections = load_corrections()
    assert corrections
    for c in corrections:
        assert set(c.rows) <= ids, c.rows
        assert len(c.why) > 80 and c.describe()


def test_corrections_change_the_scenario_of_their_rows_only() -> None:
    rows = {r.id: r for r in load_rows()}
    oracle = rows["mi300x-405b-8x-offline-thr"]
    assert oracle.precision == "fp8"  # as published in the CSV
    s = scenario_for(oracle)
    assert (s.precision, s.max_num_seqs) == ("bf16", 256)
    s = scenario_for(oracle, corrected=False)
    assert (s.precision, s.max_num_seqs) == ("fp8", None)
    mlperf = scenario_for(rows["mlperf41-mi300x-1x-offline"])
    assert (mlperf.precision, mlperf.max_num_seqs) == ("fp8", None)


def test_tpot_median_error_on_held_out_rows_within_15_percent() -> None:
    assert _median_abs(_held_out("tpot")) <= 15


def test_ttft_median_error_on_held_out_rows_within_25_percent() -> None:
    assert _median_abs(_held_out("ttft")) <= 25


def test_throughput_median_error_on_held_out_rows_within_15_percent() -> None:
    rows = _held_out("output_tokens_per_s")
    assert len(rows) >= 8
    assert _median_abs(rows) <= 15


def test_no_row_is_off_by_more_than_2x() -> None:
    for e in _errors():
        assert _worst(e) < 2, e.row.id


def test_documented_bounds_of_the_worst_rows() -> None:
    # docs/planner.md: the Oracle 405B rows at batch 256 and offline are ~+50% (the roofline
    # over-predicts the 2024 ROCm stack at large batch); everything else is within 25%.
    by_id = {e.row.id: e for e in _errors()}
    for e in by_id.values():
        limit = 1.6 if e.row.id in ORACLE_405B else 1.25
        assert _worst(e) < limit, e.row.id


def test_read_as_labelled_the_oracle_rows_miss_by_more_than_2x() -> None:
    # The sensitivity docs/planner.md reports: reading the Oracle rows as FP8 (the CSV label)
    # without an MI300X-only factor over-predicts them, worst by about 3x.
    labelled = {e.row.id: e for e in _errors_as_labelled()}
    assert all(labelled[i].ratio > 1.4 for i in ORACLE_405B)
    assert max(_worst(labelled[i]) for i in ORACLE_405B) > 2
    assert _median_abs(_held_out("output_tokens_per_s", _errors_as_labelled())) > 15


def test_an_offline_row_with_a_count_simulates_one_batch_of_that_many_requests() -> None:
    # llama-batched-bench's rows (benchmarks/llamacpp_gpu): B requests queued at once, no more.
    row = load_rows()[0]
    batch = dataclasses.replace(row, load="offline:8")
    assert scenario_for(batch).load.kind == "offline"
    assert scenario_for(batch).requests == 8
    assert scenario_for(dataclasses.replace(row, load="offline")).requests is None
    pred = {
        e.row.load: e.predicted
        for e in evaluate([batch, dataclasses.replace(row, load="offline:1")])
    }
    assert pred["offline:8"] > pred["offline:1"]


@pytest.mark.parametrize("load", ["offline:0", "offline:abc", "offline:2.5"])
def test_an_offline_count_must_be_a_whole_number(load: str) -> None:
    with pytest.raises(ValueError, match="offline:N"):
        parse_load(load)
