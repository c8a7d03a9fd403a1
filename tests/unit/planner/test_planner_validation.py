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
# The documented misses (docs/planner.md, "Reading the MI300X rows"): read as FP8, as the source
# says, the 2024 ROCm stack at large batch is over 2x slower than the NVIDIA-fitted roofline.
BEYOND_2X = {"mi300x-405b-8x-bs256-thr", "mi300x-405b-8x-offline-thr"}


# The rows of published.csv; the A100 rows have their own tests (test_planner_a100.py).
@cache
def _errors() -> tuple[RowError, ...]:
    return tuple(e for e in evaluate() if e.row.dataset == "published")


@cache
def _errors_as_labelled() -> tuple[RowError, ...]:
    return tuple(e for e in evaluate(corrected=False) if e.row.dataset == "published")


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
    assert (s.precision, s.max_num_seqs) == ("fp8", 256)
    s = scenario_for(oracle, corrected=False)
    assert (s.precision, s.max_num_seqs) == ("fp8", None)
    mlperf = scenario_for(rows["mlperf41-mi300x-1x-offline"])
    assert (mlperf.precision, mlperf.max_num_seqs) == ("fp8", None)


def test_no_correction_relabels_the_precision_of_a_row() -> None:
    # Oracle's blog says "the Llama 3.1 405B FP8 model": the rows are read as labelled.
    assert all(c.precision is None for c in load_corrections())
    for e in _errors():
        assert scenario_for(e.row).precision == e.row.precision, e.row.id


def test_tpot_median_error_on_held_out_rows_within_10_percent() -> None:
    assert _median_abs(_held_out("tpot")) <= 10


def test_ttft_median_error_on_held_out_rows_within_20_percent() -> None:
    assert _median_abs(_held_out("ttft")) <= 20


def test_throughput_target_is_met_without_the_oracle_rows_and_missed_with_them() -> None:
    rows = _held_out("output_tokens_per_s")
    assert len(rows) >= 8
    others = [e for e in rows if e.row.id not in ORACLE_405B]
    assert len(others) >= 4
    assert _median_abs(others) <= 10
    assert all(_worst(e) < 1.25 for e in others)
    # The documented miss: with the four FP8 Oracle rows the held-out median is about 30%.
    assert 20 < _median_abs(rows) < 40


def test_only_the_documented_oracle_rows_are_off_by_more_than_2x() -> None:
    beyond = {e.row.id for e in _errors() if _worst(e) >= 2}
    assert beyond == BEYOND_2X


def test_documented_bounds_of_the_worst_rows() -> None:
    # docs/planner.md: read as FP8 the Oracle rows are all over-predicted, from +50% at batch 1
    # to about 2.4x at batch 256 and offline; everything else is within 25%.
    for e in _errors():
        if e.row.id in ORACLE_405B:
            assert 1.4 < e.ratio < 2.5, e.row.id
        else:
            assert _worst(e) < 1.25, e.row.id


def test_the_2024_sequence_limit_matters_for_the_offline_oracle_row_only() -> None:
    # The one remaining correction (vLLM's 2024 max_num_seqs of 256): read as labelled, with
    # today's 1,024, the offline row is predicted higher still; the others do not change.
    labelled = {e.row.id: e for e in _errors_as_labelled()}
    corrected = {e.row.id: e for e in _errors()}
    offline = "mi300x-405b-8x-offline-thr"
    assert labelled[offline].ratio > 1.2 * corrected[offline].ratio
    for i in ORACLE_405B - {offline}:
        assert labelled[i].predicted == pytest.approx(corrected[i].predicted), i


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
