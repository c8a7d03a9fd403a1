"""Parsing what the user typed: each mistake names its flag. The lengths, think time and SLO
are the planner's types, parsed by the planner's parsers."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from sovllm.bench.config import BadSpec, parse_lengths, parse_slo, parse_think
from sovllm.planner.slo import Constraint
from sovllm.planner.workload import Lengths


def test_lengths() -> None:
    assert parse_lengths("--prompt-tokens", "300-500") == Lengths(300, 500)
    assert parse_lengths("--prompt-tokens", "64") == Lengths(64, 64)
    rng = random.Random(1)
    assert all(300 <= Lengths(300, 500).sample(rng) <= 500 for _ in range(100))


def test_lengths_take_the_planners_forms() -> None:
    # One parser for `plan` and `bench`: what one accepts, the other does, to the same value.
    for text in ("64", "300-500", "lognormal:48,120"):
        assert parse_lengths("--output-tokens", text) == Lengths.parse(text)
    logn = parse_lengths("--output-tokens", "lognormal:48,120")
    assert (logn.kind, logn.median, logn.p95, logn.lo) == ("lognormal", 48.0, 120.0, 1)
    assert str(logn) == "lognormal:48,120"  # what --compare-plan hands the planner


def test_lognormal_draws_have_the_median_and_p95_asked_for() -> None:
    # 20,000 seeded draws: the sample median and 95th percentile of a lognormal are within a
    # few percent of the true ones at this size (their standard errors are about 1%).
    logn = Lengths.parse("lognormal:48,120")
    rng = random.Random(5)
    draws = sorted(logn.sample(rng) for _ in range(20_000))
    assert statistics.median(draws) == pytest.approx(48, rel=0.05)
    assert draws[int(0.95 * len(draws))] == pytest.approx(120, rel=0.05)
    assert draws[0] >= 1 and draws[-1] <= logn.hi
    assert len(set(draws)) > 50  # varied, not one value
    # The same seed draws the same lengths: a run can be repeated.
    rng = random.Random(5)
    again = sorted(logn.sample(rng) for _ in range(20_000))
    assert again == draws
    assert logn.hi == round(
        48 * math.exp(3.090232306167813 * math.log(120 / 48) / 1.6448536269514722)
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("500-300", "minimum 500 is above the maximum 300"),
        ("0", "at least 1"),
        ("a-b", "MIN-MAX"),
        ("lognormal:100,50", "P95 must be above the median"),
        ("lognormal:x", "lognormal:MEDIAN,P95"),
    ],
)
def test_bad_lengths_name_the_flag(text: str, words: str) -> None:
    with pytest.raises(BadSpec) as err:
        parse_lengths("--prompt-tokens", text)
    assert err.value.flag == "--prompt-tokens"
    assert words in str(err.value)


def test_think_time() -> None:
    exp = parse_think("--think-time", "5")
    assert (exp.kind, exp.mean) == ("exponential", 5.0)
    rng = random.Random(3)
    draws = [exp.sample(rng) for _ in range(20_000)]
    assert sum(draws) / len(draws) == pytest.approx(5.0, rel=0.05)
    uni = parse_think("--think-time", "2-8")
    assert uni.kind == "uniform" and all(2 <= uni.sample(rng) <= 8 for _ in range(100))
    assert parse_think("--think-time", "0").sample(rng) == 0.0
    for bad in ("8-2", "x", "-1"):
        with pytest.raises(BadSpec):
            parse_think("--think-time", bad)


def test_slo_terms() -> None:
    slo = parse_slo("--slo", "ttft_p95=1.0,tpot_p95=0.1,e2e=10,ttft_mean=0.5,queue_delay_p99=2")
    assert slo.constraints == (
        Constraint("ttft", "p95", 1.0),
        Constraint("tpot", "p95", 0.1),
        Constraint("e2e", "p99", 10.0),
        Constraint("ttft", "mean", 0.5),
        Constraint("queue_delay", "p99", 2.0),
    )
    assert not parse_slo("--slo", None)


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
        parse_slo("--slo", text)
    assert err.value.flag == "--slo" and words in str(err.value)
