"""--compare-plan: the error arithmetic, and a planner that cannot answer."""

from __future__ import annotations

from typing import Any

import pytest

from sovllm.bench import compare

PREDICTION = {
    "fits": True,
    "ttft_s": {"mean": 0.5, "p50": 0.4, "p95": 1.2, "p99": 2.0},
    "tpot_s": {"mean": 0.05, "p50": 0.05, "p95": 0.08},
    "output_tokens_per_s": 150.0,
    "requests_per_s": 1.5,
}
SUMMARY: dict[str, Any] = {
    "latency_s": {"ttft": {"p50": 0.5, "p95": 1.0}, "tpot": {"p50": 0.04}},
    "throughput": {"output_tokens_per_s": 200.0, "requests_per_s": 0.0},
}


def test_error_pct() -> None:
    assert compare.error_pct(120, 100) == pytest.approx(20.0)
    assert compare.error_pct(80, 100) == pytest.approx(-20.0)
    assert compare.error_pct(1, 0) is None
    assert compare.error_pct(None, 1) is None


def test_rows() -> None:
    rows = {r["metric"]: r for r in compare.rows(PREDICTION, SUMMARY)}
    assert rows["TTFT p50 (s)"]["error_pct"] == pytest.approx(-20.0)
    assert rows["TTFT p95 (s)"]["error_pct"] == pytest.approx(20.0)
    assert rows["TPOT p50 (s)"]["error_pct"] == pytest.approx(25.0)
    assert rows["TPOT p50 (s)"]["ratio"] == pytest.approx(1.25)
    assert rows["output tokens/s"]["error_pct"] == pytest.approx(-25.0)
    # nothing measured: no error to state, rather than a division by zero
    assert rows["requests/s"]["error_pct"] is None and rows["requests/s"]["predicted"] == 1.5


def test_missing_prediction_fields_are_none() -> None:
    rows = compare.rows({"fits": True}, SUMMARY)
    assert all(r["predicted"] is None and r["error_pct"] is None for r in rows)


def test_in_process_prediction_is_what_the_command_prints() -> None:
    # The planner's Python API and `sovllm plan predict --json` must agree (issue #3's contract).
    args = [
        "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm",
        "--input-tokens", "300-500", "--output-tokens", "100", "--users", "20", "--think-time", "5",
    ]  # fmt: skip
    inside = compare.predict_in_process(args)
    assert inside == compare.predict_subprocess(args)
    assert inside["ttft_s"]["p95"] > 0 and inside["output_tokens_per_s"] > 0
    # A measured prefix-cache share travels too, and shortens the prefill the planner charges.
    cached_args = [*args, "--cached-prompt-fraction", "0.600"]
    cached = compare.predict_in_process(cached_args)
    assert cached == compare.predict_subprocess(cached_args)
    assert cached["inputs"]["cached_prompt_fraction"] == 0.6
    assert cached["ttft_s"]["mean"] < inside["ttft_s"]["mean"]


def test_a_planner_that_cannot_answer_is_a_message(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(tmp_path))
    args = [
        "--model", "smollm2-135m", "--gpu", "cpu-local", "--engine", "llamacpp",
        "--input-tokens", "40", "--output-tokens", "8", "--concurrency", "2",
    ]  # fmt: skip
    with pytest.raises(compare.PlanUnavailable, match="calibrate"):
        compare.run_predict(args)
    with pytest.raises(compare.PlanUnavailable, match="calibrate"):
        compare.predict_subprocess(args)


def _session(turns: int, cached: float | None) -> Any:
    # The parts of a finished bench session that predict_args reads.
    from types import SimpleNamespace as NS

    lengths = NS(lo=100, hi=200)
    load = NS(mode="users", turns=turns, value=4, think=NS(mean=5.0))
    tokens = {"prompt": {"count": 10, "min": 100, "max": 600}, "cached_prompt_fraction": cached}
    return NS(
        options=NS(model="m", workload=NS(prompt=lengths, output=NS(lo=64, hi=64))),
        target=NS(model="smollm2-135m-instruct"),
        main=NS(result=NS(load=load), summary={"tokens": tokens}),
    )


@pytest.mark.parametrize(
    ("cached", "flag"), [(0.5625, "0.562"), (1.0, "0.990"), (0.0, None), (None, None)]
)
def test_the_measured_cache_share_goes_to_the_planner(
    cached: float | None, flag: str | None
) -> None:
    args = compare.predict_args(_session(3, cached), "cpu-local", None)
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags.get("--cached-prompt-fraction") == flag
    assert flags["--input-tokens"] == "100-600"  # the prompts the server saw
