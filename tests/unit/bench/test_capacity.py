"""The sweep and the capacity search, driven by fake probes with a known breaking point."""

from __future__ import annotations

from typing import Any

import pytest

from sovllm.bench import capacity as cap
from sovllm.planner.slo import SLO
from sovllm.planner.workload import Load


def summary(value: float, rps: float) -> dict[str, Any]:
    return {"load": {"value": value}, "throughput": {"requests_per_s": rps}}


def threshold_probe(limit: float, calls: list[float]) -> cap.Probe:
    async def probe(v: float) -> cap.Outcome:
        calls.append(v)
        return cap.Outcome(v, v <= limit, summary(v, v))

    return probe


@pytest.mark.parametrize(("start", "limit"), [(1, 37), (20, 37), (64, 37), (10, 1), (1, 1000)])
async def test_search_finds_the_largest_user_count(start: int, limit: int) -> None:
    calls: list[float] = []
    found = await cap.search(threshold_probe(limit, calls), start, True, 1, 1024)
    assert found.best is not None
    assert limit / 1.05 <= found.best <= limit
    if limit < 40:
        assert found.best == limit  # within 5% of a small count is the count itself
    assert len(calls) == len(set(calls)) <= 16  # never the same level twice
    assert all(v == int(v) for v in calls)


async def test_search_for_a_rate_stops_within_tolerance() -> None:
    calls: list[float] = []
    found = await cap.search(threshold_probe(3.3, calls), 1.0, False, 0.05, 100, rel_tol=0.05)
    assert found.best is not None
    assert 3.3 / 1.05 <= found.best <= 3.3


async def test_search_when_nothing_meets_or_everything_does() -> None:
    never = await cap.search(threshold_probe(0.5, []), 8, True, 1, 64)
    assert never.best is None and "not met even at 1" in never.limited_by
    always = await cap.search(threshold_probe(1e9, []), 8, True, 1, 64)
    assert always.best == 64 and "ceiling" in always.limited_by


def test_capacity_line() -> None:
    slo = SLO.parse("ttft_p95=1.0")
    assert (
        cap.capacity_line(37, Load("users", 10), slo, 1)
        == "this deployment serves 37 users at TTFT p95 ≤ 1.0 s"
    )
    two = SLO.parse("ttft_p95=1.0,tpot_p95=0.1")
    assert cap.capacity_line(2.5, Load("rate", 1), two, 0.05) == (
        "this deployment serves 2.5 req/s at TTFT p95 ≤ 1.0 s and TPOT p95 ≤ 0.1 s"
    )
    assert "does not meet" in cap.capacity_line(None, Load("users", 10), slo, 1)


def test_sweep_levels() -> None:
    assert cap.sweep_levels(Load("users", 20)) == [1, 2, 4, 8, 16, 20]
    assert cap.sweep_levels(Load("concurrency", 8)) == [1, 2, 4, 8]
    assert cap.sweep_levels(Load("rate", 16)) == [1, 2, 4, 8, 16]


async def test_sweep_stops_when_the_slo_breaks() -> None:
    calls: list[float] = []
    outcomes, why = await cap.sweep(
        threshold_probe(4, calls),
        Load("users", 32),
        [1, 2, 4, 8, 16, 32],
        SLO.parse("ttft=1"),
    )
    assert calls == [1, 2, 4, 8] and "SLO broken at 8" in why
    assert [o.met for o in outcomes] == [True, True, True, False]


async def test_sweep_stops_at_saturation() -> None:
    async def flat(v: float) -> cap.Outcome:
        return cap.Outcome(v, True, summary(v, min(v, 3.0)))

    outcomes, why = await cap.sweep(flat, Load("users", 32), [1, 2, 4, 8, 16], SLO())
    assert [o.value for o in outcomes] == [1, 2, 4, 8] and why.startswith("saturated at 8")


def test_open_loop_saturation_is_falling_behind_the_offered_rate() -> None:
    load = Load("rate", 10)
    assert cap.saturation(load, [], summary(10, 9.5)) is None
    assert "of 10 offered" in str(cap.saturation(load, [], summary(10, 6.0)))
