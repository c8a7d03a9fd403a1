"""Parsing what the user typed: each mistake names its flag."""

from __future__ import annotations

import random

import pytest

from sovllm.bench.config import SLO, BadSpec, Constraint, Lengths, ThinkTime


def test_lengths() -> None:
    assert Lengths.parse("--prompt-tokens", "300-500") == Lengths(300, 500)
    assert Lengths.parse("--prompt-tokens", "64") == Lengths(64, 64)
    rng = random.Random(1)
    assert all(300 <= Lengths(300, 500).sample(rng) <= 500 for _ in range(100))


@pytest.mark.parametrize(
    ("text", "words"),
    [("500-300", "minimum 500 is above the maximum 300"), ("0", "at least 1"), ("a-b", "MIN-MAX")],
)
def test_bad_lengths_name_the_flag(text: str, words: str) -> None:
    with pytest.raises(BadSpec) as err:
        Lengths.parse("--prompt-tokens", text)
    assert err.value.flag == "--prompt-tokens"
    assert words in str(err.value)


def test_think_time() -> None:
    exp = ThinkTime.parse("--think-time", "5")
    assert (exp.kind, exp.mean) == ("exponential", 5.0)
    rng = random.Random(3)
    draws = [exp.sample(rng) for _ in range(20_000)]
    assert sum(draws) / len(draws) == pytest.approx(5.0, rel=0.05)
    uni = ThinkTime.parse("--think-time", "2-8")
    assert uni.kind == "uniform" and all(2 <= uni.sample(rng) <= 8 for _ in range(100))
    assert ThinkTime.parse("--think-time", "0").sample(rng) == 0.0
    for bad in ("8-2", "x", "-1"):
        with pytest.raises(BadSpec):
            ThinkTime.parse("--think-time", bad)


def test_slo_terms() -> None:
    slo = SLO.parse("--slo", "ttft_p95=1.0,tpot_p95=0.1,e2e=10,ttft_mean=0.5,queue_delay_p99=2")
    assert slo.constraints == (
        Constraint("ttft", "p95", 1.0),
        Constraint("tpot", "p95", 0.1),
        Constraint("e2e", "p99", 10.0),
        Constraint("ttft", "mean", 0.5),
        Constraint("queue_delay", "p99", 2.0),
    )
    assert not SLO.parse("--slo", None)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("latency_p95=1", "unknown metric"),
        ("ttft_p42=1", "unknown statistic"),
        ("ttft_p95", "METRIC_STAT=SECONDS"),
        ("ttft_p95=fast", "not a number"),
        ("ttft_p95=0", "above 0"),
    ],
)
def test_bad_slo(text: str, words: str) -> None:
    with pytest.raises(BadSpec) as err:
        SLO.parse("--slo", text)
    assert err.value.flag == "--slo" and words in str(err.value)
