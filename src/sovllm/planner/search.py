"""Sizing: for each GPU x precision x TP, binary-search the most users one replica sustains
within the SLO (as Vidur-Search does for QPS), then replicate and rank by cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from sovllm.planner.cost import CostReport, cost_report
from sovllm.planner.memory import MemoryPlan
from sovllm.planner.predict import Prediction, Scenario, memory_for, predict, tp_problem
from sovllm.planner.question import SizingQuestion
from sovllm.planner.slo import SLO
from sovllm.planner.specs import PRECISION_BYTES, Engine, Hardware, Model
from sovllm.planner.workload import Lengths, Load, ThinkTime

TP_CHOICES = (1, 2, 4, 8)


def violation(slo: SLO, pred: Prediction) -> str:
    """Why the prediction misses the SLO's TTFT and TPOT terms, or '' when it meets them (the
    simulator gives those two; a bench SLO's other metrics are not the planner's to judge)."""
    sim = pred.sim
    if sim is None:
        return pred.memory.reason or "does not fit"
    for c in slo.constraints:
        if c.metric not in ("ttft", "tpot"):
            continue
        value = getattr(getattr(sim, c.metric), c.stat, None)
        if not isinstance(value, float) or value <= c.limit_s:
            continue
        if c.metric == "ttft":
            return f"TTFT {c.stat} {value:.2f} s > {c.limit_s:g} s"
        return f"TPOT {c.stat} {value * 1000:.0f} ms > {c.limit_s * 1000:g} ms"
    return ""


@dataclass(frozen=True)
class Candidate:
    hw: Hardware
    precision: str
    tp: int
    users_per_replica: int  # the most users one replica serves within the SLO (0: none)
    replicas: int
    prediction: Prediction | None  # at the deployed load (users spread over the replicas)
    memory: MemoryPlan
    cost: CostReport | None
    reason: str = ""  # why it is not feasible

    @property
    def feasible(self) -> bool:
        return self.users_per_replica > 0 and self.cost is not None

    @property
    def gpus(self) -> int:
        return self.replicas * self.tp


@dataclass
class SizingResult:
    model: Model
    users: int
    prompt: Lengths
    output: Lengths
    think_time_s: float
    slo: SLO
    engine: Engine
    feasible: list[Candidate] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)
    cached_fraction: float = 0.0

    @property
    def best(self) -> Candidate | None:
        return self.feasible[0] if self.feasible else None


def _scenario(q: SizingQuestion, hw: Hardware, precision: str, tp: int, users: int) -> Scenario:
    return Scenario(
        model=q.model,
        hw=hw,
        engine=q.engine,
        precision=precision,
        tp=tp,
        pp=1,
        num_gpus=tp,
        prompt=q.prompt,
        output=q.output,
        load=Load("users", users, ThinkTime.exponential(q.think_time_s)),
        cached_fraction=q.cached_fraction,
    )


def max_users(make: Scenario, slo: SLO, upper: int, requests: int | None = None) -> tuple[int, str]:
    """The largest user count in [1, upper] meeting the SLO (0 if none), and the reason the next
    one fails."""

    def ok(u: int) -> str:
        n = requests if requests is not None else u + max(3 * u, 200)
        s = replace(make, load=Load("users", u, make.load.think), requests=n)
        return violation(slo, predict(s))

    first = ok(1)
    if first:
        return 0, f"even 1 user misses the SLO: {first}"
    if not ok(upper):
        return upper, f"meets the SLO at all {upper} users (not searched beyond {upper} users)"
    lo, hi, why = 1, upper, ""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        v = ok(mid)
        if v:
            hi, why = mid, v
        else:
            lo = mid
    return lo, f"at {hi} users: {why}" if why else ""


def size(q: SizingQuestion) -> SizingResult:
    """For each GPU x precision x TP, the most users one replica serves within the SLO, then
    the replicas for all the users; ranked by cost."""
    model, users, slo = q.model, q.users, q.slo
    result = SizingResult(
        model,
        users,
        q.prompt,
        q.output,
        q.think_time_s,
        slo,
        q.engine,
        cached_fraction=q.cached_fraction,
    )
    for hw in q.gpus:
        for precision in q.precisions:
            for tp in TP_CHOICES:
                if tp > q.max_tp or tp_problem(model, tp):
                    continue
                if tp > 1 and hw.kind == "cpu":
                    continue  # a measured machine: one box serves one replica
                base = _scenario(q, hw, precision, tp, users)
                mem = memory_for(base)
                if not mem.fits:
                    result.rejected.append(
                        Candidate(hw, precision, tp, 0, 0, None, mem, None, mem.reason)
                    )
                    continue
                per, why = max_users(base, slo, users)
                if per == 0:
                    result.rejected.append(Candidate(hw, precision, tp, 0, 0, None, mem, None, why))
                    continue
                replicas = math.ceil(users / per)
                deployed = replace(base, num_gpus=replicas * tp)
                pred = predict(deployed)
                c = cost_report(
                    hw, replicas * tp, pred.output_tokens_per_s, q.cost, pred.requests_per_s
                )
                result.feasible.append(
                    Candidate(hw, precision, tp, per, replicas, pred, pred.memory, c, why)
                )

    _rank(result, q.rank_by)
    return result


def _rank(result: SizingResult, rank_by: str) -> None:
    """Cheapest first; then fewer GPUs (fewer parts to run); then the more precise weights (same
    cost, better quality)."""

    def monthly(c: Candidate) -> float:
        if c.cost is None:
            return math.inf
        return c.cost.cloud_per_month if rank_by == "cloud" else c.cost.onprem_per_month

    result.feasible.sort(key=lambda c: (monthly(c), c.gpus, -PRECISION_BYTES[c.precision]))


MAX_REPLAY_REPLICAS = 64


def size_replay(q: SizingQuestion) -> SizingResult:
    """For each GPU x precision x TP, the fewest replicas that serve the recorded requests
    (`q.trace`: their arrivals; `q.prompt` and `q.output`: their lengths, request k taking value
    k) within the SLO, found by doubling then bisecting; then ranked by cost as `size` ranks."""
    assert q.trace is not None, "size_replay sizes a recorded trace"
    model, users, slo, trace = q.model, q.users, q.slo, q.trace
    result = SizingResult(model, users, q.prompt, q.output, q.think_time_s, slo, q.engine)
    for hw in q.gpus:
        for precision in q.precisions:
            for tp in TP_CHOICES:
                if tp > q.max_tp or tp_problem(model, tp) or (tp > 1 and hw.kind == "cpu"):
                    continue
                # The recorded requests carry no cached share (`--from-usage` has none).
                base = replace(_scenario(q, hw, precision, tp, 1), load=trace, cached_fraction=0.0)
                mem = memory_for(base)
                if not mem.fits:
                    result.rejected.append(
                        Candidate(hw, precision, tp, 0, 0, None, mem, None, mem.reason)
                    )
                    continue

                def run(n: int, base: Scenario = base, tp: int = tp) -> Prediction:
                    return predict(replace(base, num_gpus=n * tp))

                n, pred = 1, run(1)
                while violation(slo, pred) and n < MAX_REPLAY_REPLICAS:
                    n = min(2 * n, MAX_REPLAY_REPLICAS)
                    pred = run(n)
                why = violation(slo, pred)
                if why:
                    reason = f"{MAX_REPLAY_REPLICAS} replicas still miss the SLO: {why}"
                    result.rejected.append(
                        Candidate(hw, precision, tp, 0, 0, None, mem, None, reason)
                    )
                    continue
                lo, hi = n // 2, n  # lo misses (or is 0), hi meets
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    p = run(mid)
                    if violation(slo, p):
                        lo = mid
                    else:
                        hi, pred = mid, p
                c = cost_report(hw, hi * tp, pred.output_tokens_per_s, q.cost, pred.requests_per_s)
                per = math.ceil(users / hi)
                result.feasible.append(Candidate(hw, precision, tp, per, hi, pred, pred.memory, c))
    _rank(result, q.rank_by)
    return result


# The user counts each candidate is simulated at for the report's latency curves, as multiples
# of the users sized for: fixed, so two reports of one question show the same points.
SWEEP_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class SweepPoint:
    users: int
    ttft_p95_s: float
    tpot_p95_s: float


def sweep_users(users: int, factors: tuple[float, ...] = SWEEP_FACTORS) -> list[int]:
    return sorted({max(1, round(users * f)) for f in factors})


def latency_sweep(r: SizingResult, c: Candidate, counts: list[int]) -> list[SweepPoint]:
    """The candidate's deployment (its replicas, users dealt round-robin) under each user count,
    simulated as `size` simulates the deployed load: where its TTFT and TPOT leave the SLO.
    A replayed sizing is swept with closed-loop users over the recorded lengths. A count the
    simulator cannot finish ends the sweep (the points before it stand)."""
    from sovllm.planner.simulator import SimulationError

    base = Scenario(
        model=r.model,
        hw=c.hw,
        engine=r.engine,
        precision=c.precision,
        tp=c.tp,
        pp=1,
        num_gpus=c.replicas * c.tp,
        prompt=r.prompt,
        output=r.output,
        load=Load("users", 1, ThinkTime.exponential(r.think_time_s)),
        cached_fraction=r.cached_fraction,
    )
    points: list[SweepPoint] = []
    for users in counts:
        try:
            pred = predict(
                replace(base, load=Load("users", users, ThinkTime.exponential(r.think_time_s)))
            )
        except SimulationError:
            break
        if pred.sim is None:
            break
        points.append(SweepPoint(users, pred.sim.ttft.p95, pred.sim.tpot.p95))
    return points
