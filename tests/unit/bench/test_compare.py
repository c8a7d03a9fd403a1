"""--compare-plan: the error arithmetic, and a planner that cannot answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sovllm.bench import compare
from sovllm.planner.workload import Lengths, Load, ThinkTime

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


def _session(
    turns: int,
    cached: float | None,
    model: str = "smollm2-135m-instruct",
    output: str = "64",
    kind: str = "users",
) -> Any:
    # The parts of a finished bench session that the comparison reads.
    from types import SimpleNamespace as NS

    load = Load(kind, 4, ThinkTime.exponential(5.0), turns=turns)  # type: ignore[arg-type]
    tokens = {"prompt": {"count": 10, "min": 100, "max": 600}, "cached_prompt_fraction": cached}
    workload = NS(prompt=Lengths(100, 200), output=Lengths.parse(output))
    return NS(
        options=NS(model="m", workload=workload),
        target=NS(model=model),
        main=NS(result=NS(load=load), summary={"tokens": tokens}),
    )


def test_the_prediction_is_what_the_recorded_command_prints() -> None:
    # In process, with no flags in between; the recorded command reproduces it exactly.
    from typer.testing import CliRunner

    from sovllm.cli.main import app

    session = _session(1, 0.6, model="llama-3.1-8b", output="lognormal:64,200")
    s = compare.scenario(session, "h100-sxm", None)
    inside = compare.predict_doc(s)
    assert inside["inputs"]["output_tokens"] == "lognormal:64,200"
    assert inside["inputs"]["cached_prompt_fraction"] == 0.6
    assert inside["ttft_s"]["p95"] > 0 and inside["output_tokens_per_s"] > 0
    cmd = compare.command(s)
    result = CliRunner().invoke(app, cmd[1:])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == inside


def test_a_planner_that_cannot_answer_is_a_message(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(tmp_path))  # no cpu-local profile here
    with pytest.raises(compare.PlanUnavailable, match="calibrate"):
        compare.scenario(_session(1, None, model="smollm2-135m"), "cpu-local", None)
    with pytest.raises(compare.PlanUnavailable, match="replayed trace"):
        compare.scenario(_session(1, None, kind="replay"), "h100-sxm", "llama-3.1-8b")
    # The scenario is checked before it is predicted: the answer cannot outgrow the context.
    long = _session(1, None, model="llama-2-70b", output="lognormal:2000,4000")
    with pytest.raises(compare.PlanUnavailable, match="context"):
        compare.scenario(long, "h100-sxm", None)
    cmp = compare.compare(_session(1, None, kind="replay"), "h100-sxm", "llama-3.1-8b")
    assert cmp == {"hardware": "h100-sxm", "error": "the planner has no model of a replayed trace"}


@pytest.mark.parametrize(
    ("cached", "share"), [(0.5625, 0.562), (1.0, 0.99), (0.0, 0.0), (None, 0.0)]
)
def test_the_measured_cache_share_goes_to_the_planner(cached: float | None, share: float) -> None:
    s = compare.scenario(_session(3, cached), "h100-sxm", "llama-3.1-8b")
    assert s.cached_fraction == share
    assert s.prompt == Lengths(100, 600)  # the prompts the server saw
    flag = "--cached-prompt-fraction"
    assert (flag in compare.command(s)) == bool(share)
