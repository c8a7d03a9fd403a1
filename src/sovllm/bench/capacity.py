"""Raising the load: a sweep of levels, and the binary search for the largest load that meets
the SLO (as MLPerf's LoadGen and Vidur-Search do). Both take a `probe` that runs one level and
says whether it met the SLO, so the search logic is tested without a server.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sovllm.planner.slo import SLO
from sovllm.planner.workload import Load

Probe = Callable[[float], Awaitable["Outcome"]]


@dataclass(frozen=True)
class Outcome:
    value: float
    met: bool
    summary: dict[str, Any] = field(default_factory=dict)


def sweep_levels(load: Load) -> list[float]:
    """Doubling from 1 up to the given users/concurrency; for a rate, 1/16 of it up to it."""
    top = load.value
    if load.kind == "rate":
        return [top / 2**k for k in range(4, -1, -1)]
    levels = [float(2**k) for k in range(int(math.log2(top)) + 1) if 2**k < top]
    return [*levels, float(top)]


def saturation(load: Load, history: list[dict[str, Any]], current: dict[str, Any]) -> str | None:
    """Why the server is saturated at this level, or None.

    Open loop: it completes under 90% of the offered rate. Closed loop: a higher load no longer
    buys 5% more requests/s than the best level so far.
    """
    achieved = float(current["throughput"]["requests_per_s"])
    if load.kind == "rate":
        offered = float(current["load"]["value"])
        if achieved < 0.9 * offered:
            return f"completes {achieved:.2f} req/s of {offered:g} offered"
        return None
    if not history:
        return None
    best = max(float(h["throughput"]["requests_per_s"]) for h in history)
    if achieved < 1.05 * best:
        return f"{achieved:.2f} req/s, no better than {best:.2f} at a lower load"
    return None


async def sweep(
    probe: Probe, load: Load, levels: list[float], slo: SLO
) -> tuple[list[Outcome], str]:
    """Run levels in order until the SLO breaks or the server saturates."""
    outcomes: list[Outcome] = []
    for level in levels:
        outcome = await probe(level)
        outcomes.append(outcome)
        if slo and not outcome.met:
            return outcomes, f"SLO broken at {level:g} {load.unit}"
        why = saturation(load, [o.summary for o in outcomes[:-1]], outcome.summary)
        if why:
            return outcomes, f"saturated at {level:g} {load.unit}: {why}"
    return outcomes, "all levels run"


@dataclass
class Capacity:
    best: float | None
    probes: list[Outcome]
    limited_by: str

    def as_json(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "limited_by": self.limited_by,
            "probes": [{"value": p.value, "met": p.met} for p in self.probes],
        }


async def search(
    probe: Probe,
    start: float,
    integer: bool,
    floor: float,
    ceiling: float,
    rel_tol: float = 0.05,
    max_probes: int = 20,
) -> Capacity:
    """The largest load in [floor, ceiling] that meets the SLO.

    Double (or halve) from `start` until the outcome flips, then bisect until the bracket is
    `rel_tol` of the load wide (and, for users, down to one user where that is finer): each
    probe is a full run, so the last few percent are not worth their minutes. Assumes that
    meeting the SLO is monotone in the load.
    """
    probes: list[Outcome] = []
    seen: dict[float, bool] = {}

    async def test(v: float) -> bool:
        if v not in seen:
            outcome = await probe(v)
            probes.append(outcome)
            seen[v] = outcome.met
        return seen[v]

    def clamp(v: float) -> float:
        v = min(max(v, floor), ceiling)
        return float(round(v)) if integer else v

    lo: float | None = None
    hi: float | None = None
    v = clamp(start)
    if await test(v):
        lo = v
        while lo < ceiling and len(probes) < max_probes:
            v = clamp(lo * 2)
            if await test(v):
                lo = v
            else:
                hi = v
                break
    else:
        hi = v
        while hi > floor and len(probes) < max_probes:
            v = clamp(hi / 2)
            if await test(v):
                lo = v
                break
            hi = v
    if lo is None:
        return Capacity(None, probes, f"the SLO is not met even at {floor:g}")
    if hi is None:
        return Capacity(lo, probes, f"the SLO is met up to the ceiling {ceiling:g}")

    def wide(a: float, b: float) -> bool:
        if integer:
            return b - a > max(1.0, math.floor(rel_tol * a))
        return b / a > 1 + rel_tol

    while wide(lo, hi) and len(probes) < max_probes:
        mid = float(math.floor((lo + hi) / 2)) if integer else (lo + hi) / 2
        if await test(mid):
            lo = mid
        else:
            hi = mid
    return Capacity(lo, probes, f"the SLO breaks at {hi:g}")


def seconds(x: float) -> str:
    """1.0 stays "1.0" (as the user wrote it), 0.25 stays "0.25"."""
    return f"{x:.1f}" if x == int(x) else f"{x:g}"


def capacity_line(best: float | None, load: Load, slo: SLO, floor: float) -> str:
    terms = " and ".join(
        f"{c.metric.upper().replace('_', ' ')} {c.stat} ≤ {seconds(c.limit_s)} s"
        for c in slo.constraints
    )

    def amount(v: float) -> str:
        if load.kind == "rate":
            return f"{v:.3g} req/s"
        if load.kind == "users":
            return f"{v:g} user" + ("" if v == 1 else "s")
        return f"{v:g} in flight"

    if best is None:
        return f"this deployment does not meet {terms} even at {amount(floor)}"
    serves = amount(best)
    return f"this deployment serves {serves} at {terms}"
