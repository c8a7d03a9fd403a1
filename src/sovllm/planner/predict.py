"""One scenario end to end: memory plan, step model, simulation, data-parallel replicas."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sovllm.planner.errors import ScenarioError
from sovllm.planner.memory import MemoryPlan, kv_dtype_bytes, plan_memory
from sovllm.planner.perf import StepModel, make_step_model
from sovllm.planner.simulator import SchedulerConfig, SimResult, simulate
from sovllm.planner.specs import PRECISIONS, Engine, Hardware, Model, scheduler_limits
from sovllm.planner.workload import Lengths, Load

KV_PRECISIONS = ("auto", "bf16", "fp16", "fp8")
# Users or clients in all. The simulator holds about five requests per closed-loop client, and
# `plan size` simulates all the users on one replica at the top of its search, so memory and
# time grow with this without bound. 100,000 users of Llama-3.3-70B need 132 replicas of 2
# MI300X (264 GPUs), far beyond a private deployment; on a 2-core machine one simulation of
# them takes ~300 MB and ~10 s, a sizing on one GPU type ~35 s. Above it: refused at once.
MAX_CLIENTS = 100_000
# Requests simulated (`--requests`): an offline batch creates them all at once, ~450 bytes each;
# 1 M take ~450 MB and ~10 s, and the simulator gives up after MAX_EVENTS (2 M) steps anyway.
MAX_REQUESTS = 1_000_000


def tp_problem(model: Model, tp: int) -> str:
    """Why `tp` cannot shard this model, or ''."""
    if model.heads % tp:
        return f"TP={tp} does not divide the {model.heads} attention heads"
    if model.kv_heads % tp and tp % model.kv_heads:
        return f"TP={tp} and the {model.kv_heads} KV heads do not divide one another"
    return ""


def check_load(load: Load) -> None:
    """Raise ScenarioError for a load the simulator cannot run."""
    v = load.value
    if load.kind in ("concurrency", "users"):
        if v < 1:
            raise ScenarioError("load.value", f"must be at least 1, got {v:g}")
        if v > MAX_CLIENTS:
            raise ScenarioError(
                "load.value", f"must be at most {MAX_CLIENTS:,} (the planner's limit), got {v}"
            )
    if load.kind == "rate":
        if not math.isfinite(v):
            raise ScenarioError("load.value", f"must be a finite number, got {v}")
        if not v > 0:
            raise ScenarioError("load.value", f"must be above 0, got {v}")
    think = load.think_time_s
    if not math.isfinite(think):
        raise ScenarioError("load.think", f"must be a finite number, got {think}")
    if think < 0:
        raise ScenarioError("load.think", f"must be 0 or more, got {think}")


def check_context(model: Model, prompt: Lengths, output: Lengths) -> None:
    """The longest prompt and answer must fit the model's context."""
    need = prompt.hi + output.hi
    if model.max_context is not None and need > model.max_context:
        # A lognormal is planned up to its 99.9th percentile: say so, or the number surprises.
        tail = (
            " (a lognormal's 99.9th percentile)"
            if "lognormal" in (prompt.kind, output.kind)
            else ""
        )
        raise ScenarioError(
            "lengths",
            f"reach {need} tokens{tail}, beyond {model.name}'s context of "
            f"{model.max_context} tokens",
            subject="the prompt and output lengths",
        )


@dataclass(frozen=True)
class Scenario:
    """One deployment under one load. `check()` says what is wrong with it, in words a user
    can act on; the CLI and `bench --compare-plan` build one and check it before predicting."""

    model: Model
    hw: Hardware
    engine: Engine
    precision: str
    tp: int
    pp: int
    num_gpus: int
    prompt: Lengths
    output: Lengths
    load: Load
    kv_precision: str = "auto"
    requests: int | None = None
    seed: int = 0
    max_num_seqs: int | None = None
    cached_fraction: float = 0.0  # share of each prompt served from the prefix cache

    def check(self) -> None:
        """Raise ScenarioError naming the first thing that cannot be planned."""
        for name, value in (("tp", self.tp), ("pp", self.pp), ("num_gpus", self.num_gpus)):
            if value < 1:
                raise ScenarioError(name, f"must be at least 1, got {value}")
        if self.num_gpus % (self.tp * self.pp):
            raise ScenarioError(
                "tp", f"TP x PP = {self.tp * self.pp} does not divide --num-gpus {self.num_gpus}"
            )
        for name, limit in (("requests", self.requests), ("max_num_seqs", self.max_num_seqs)):
            if limit is not None and limit < 1:
                raise ScenarioError(name, f"must be at least 1, got {limit}")
        if self.requests is not None and self.requests > MAX_REQUESTS:
            raise ScenarioError(
                "requests",
                f"must be at most {MAX_REQUESTS:,} (the planner's limit), got {self.requests}",
            )
        check_load(self.load)
        if self.kv_precision not in KV_PRECISIONS:
            raise ScenarioError(
                "kv_precision",
                f"unknown KV precision '{self.kv_precision}'; choose auto, bf16, fp16, fp8",
            )
        if self.precision not in PRECISIONS:
            raise ScenarioError(
                "precision",
                f"unknown precision '{self.precision}'; choose from {', '.join(PRECISIONS)}",
            )
        if not 0 <= self.cached_fraction < 1:
            raise ScenarioError(
                "cached_fraction", f"must be at least 0 and below 1, got {self.cached_fraction}"
            )
        check_context(self.model, self.prompt, self.output)
        why = tp_problem(self.model, self.tp)
        if why:
            raise ScenarioError("tp", why)
        if self.pp > self.model.layers:
            raise ScenarioError("pp", f"PP={self.pp} exceeds the {self.model.layers} layers")
        if self.hw.kind == "cpu":
            for name, degree in (("tp", self.tp), ("pp", self.pp)):
                if degree > 1:
                    raise ScenarioError(
                        name,
                        f"{self.hw.name} is one measured machine: {name.upper()} must be 1, "
                        f"got {degree}",
                    )

    @property
    def replicas(self) -> int:
        return max(1, self.num_gpus // (self.tp * self.pp))

    @property
    def context_tokens(self) -> int:
        return self.prompt.hi + self.output.hi

    def replica_loads(self) -> list[tuple[Load, int]]:
        """(load, replicas carrying it), busiest first. Clients and users are dealt round-robin,
        so U over n replicas gives U mod n replicas one client more than the rest."""
        n = self.replicas
        if self.load.kind in ("offline", "trace") or n == 1:
            return [(self.load, n)]
        if self.load.kind == "rate":
            return [(Load("rate", self.load.value / n), n)]
        base, extra = divmod(math.ceil(self.load.value), n)
        counts = [(base + 1, extra), (base, n - extra)]
        return [
            (replace(self.load, value=clients), replicas)
            for clients, replicas in counts
            if clients > 0 and replicas > 0
        ]

    def per_replica_load(self) -> Load:
        """The busiest replica's load: it sets the latency and the memory needed."""
        return self.replica_loads()[0][0]

    def resident_sequences(self) -> int:
        load = self.per_replica_load()
        if load.kind in ("concurrency", "users"):
            return int(load.value)
        return 1


@dataclass(frozen=True)
class Prediction:
    scenario: Scenario
    memory: MemoryPlan
    sim: SimResult | None
    output_tokens_per_s: float
    requests_per_s: float


def memory_for(s: Scenario) -> MemoryPlan:
    return plan_memory(
        s.model,
        s.hw,
        s.engine,
        s.precision,
        s.tp,
        s.pp,
        sequences=s.resident_sequences(),
        context_tokens=s.context_tokens,
        kv_precision=s.kv_precision,
    )


def step_model_for(s: Scenario) -> StepModel:
    kvb = kv_dtype_bytes(s.precision, s.engine, s.kv_precision)
    return make_step_model(s.model, s.hw, s.engine, s.precision, s.tp, s.pp, kvb)


def scheduler_for(s: Scenario, mem: MemoryPlan) -> SchedulerConfig:
    seqs, tokens = scheduler_limits(s.engine, s.hw)
    if s.max_num_seqs is not None:
        seqs = s.max_num_seqs
    return SchedulerConfig(
        max_num_seqs=seqs,
        max_num_batched_tokens=tokens,
        kv_token_capacity=mem.kv_token_capacity,
        request_overhead_s=s.engine.request_overhead_s,
    )


def _offline_batch(s: Scenario) -> int | None:
    """Requests in the whole offline batch: as given, else a lengths file's lines, else None
    (the simulator's default per replica)."""
    if s.requests is not None:
        return s.requests
    if s.prompt.kind == "file":
        return len(s.prompt.values)
    return None


def _predict_offline(
    s: Scenario, mem: MemoryPlan, step: StepModel, sched: SchedulerConfig
) -> Prediction:
    """An offline batch is split over the replicas, not copied: replica r takes requests r,
    r + n, r + 2n, ... (with random lengths, each with its own seed). Throughput is all output
    tokens over the makespan of the slowest replica. Replicas with the same share of a batch of
    fixed lengths, or with no batch size given, are simulated once."""
    n = s.replicas
    batch = _offline_batch(s)
    varied = s.prompt.varies or s.output.varies or s.prompt.kind == "file"
    shares: list[tuple[int | None, int, int]] = []  # (requests, first index, replicas alike)
    if batch is None:
        # The simulator's default batch per replica stands for a long run: one draw serves all.
        shares = [(None, 0, n)]
    elif varied:
        shares = [(len(range(r, batch, n)), r, 1) for r in range(min(n, batch))]
    else:
        base, extra = divmod(batch, n)
        shares = [(k, 0, c) for k, c in ((base + 1, extra), (base, n - extra)) if k and c]
    sims = [
        (
            simulate(
                step,
                sched,
                s.load,
                s.prompt,
                s.output,
                requests=k,
                seed=s.seed + first,
                cached_fraction=s.cached_fraction,
                first_index=first,
                index_stride=n,
            ),
            count,
        )
        for k, first, count in shares
    ]
    makespan = max(sim.sim_seconds for sim, _ in sims)
    tokens = sum(sim.output_tokens * count for sim, count in sims)
    done = sum(sim.measured * count for sim, count in sims)
    slowest = max(sims, key=lambda x: x[0].sim_seconds)[0]
    if makespan <= 0:
        return Prediction(s, mem, slowest, 0.0, 0.0)
    return Prediction(s, mem, slowest, tokens / makespan, done / makespan)


def _predict_trace(
    s: Scenario, mem: MemoryPlan, step: StepModel, sched: SchedulerConfig
) -> Prediction:
    """Recorded requests replayed as they arrived, dealt round-robin over the replicas (replica
    r takes requests r, r + n, ...: their arrival times and their own lengths). Throughput is
    every output token over the last replica's finish; the latencies are the replica with the
    worst TTFT p95's."""
    n = s.replicas
    arrivals = s.load.arrivals
    sims = [
        simulate(
            step,
            sched,
            replace(s.load, arrivals=arrivals[r::n]),
            s.prompt,
            s.output,
            seed=s.seed,
            cached_fraction=s.cached_fraction,
            first_index=r,
            index_stride=n,
        )
        for r in range(min(n, len(arrivals)))
    ]
    end = max(sim.sim_seconds for sim in sims)
    worst = max(sims, key=lambda sim: sim.ttft.p95)
    if end <= 0:
        return Prediction(s, mem, worst, 0.0, 0.0)
    tokens = sum(sim.output_tokens for sim in sims)
    return Prediction(s, mem, worst, tokens / end, sum(sim.completed for sim in sims) / end)


def predict(s: Scenario) -> Prediction:
    mem = memory_for(s)
    if not mem.fits:
        return Prediction(s, mem, None, 0.0, 0.0)
    step, sched = step_model_for(s), scheduler_for(s, mem)
    if s.load.kind == "offline":
        return _predict_offline(s, mem, step, sched)
    if s.load.kind == "trace":
        return _predict_trace(s, mem, step, sched)
    requests = s.requests
    sims = [
        (
            simulate(
                step,
                sched,
                load,
                s.prompt,
                s.output,
                requests=requests,
                seed=s.seed,
                cached_fraction=s.cached_fraction,
            ),
            count,
        )
        for load, count in s.replica_loads()
    ]
    tokens = sum(sim.output_tokens_per_s * count for sim, count in sims)
    rate = sum(sim.requests_per_s * count for sim, count in sims)
    # Latency percentiles are the busiest replica's: the ones a user can be unlucky enough to see.
    return Prediction(s, mem, sims[0][0], tokens, rate)
