"""One scenario end to end: memory plan, step model, simulation, data-parallel replicas."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sovllm.planner.catalog import Engine, Hardware, Model, scheduler_limits
from sovllm.planner.memory import MemoryPlan, kv_dtype_bytes, plan_memory
from sovllm.planner.perf import StepModel, make_step_model
from sovllm.planner.simulator import SchedulerConfig, SimResult, simulate
from sovllm.planner.workload import Lengths, Load


@dataclass(frozen=True)
class Scenario:
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

    @property
    def replicas(self) -> int:
        return max(1, self.num_gpus // (self.tp * self.pp))

    @property
    def context_tokens(self) -> int:
        return self.prompt.hi + self.output.hi

    def per_replica_load(self) -> Load:
        n = self.replicas
        if self.load.kind == "offline" or n == 1:
            return self.load
        if self.load.kind == "rate":
            return Load("rate", self.load.value / n)
        # Round-robin over replicas: the busiest one sets the latency.
        return Load(self.load.kind, math.ceil(self.load.value / n), self.load.think_time_s)

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


def predict(s: Scenario) -> Prediction:
    mem = memory_for(s)
    if not mem.fits:
        return Prediction(s, mem, None, 0.0, 0.0)
    sim = simulate(
        step_model_for(s),
        scheduler_for(s, mem),
        s.per_replica_load(),
        s.prompt,
        s.output,
        requests=s.requests,
        seed=s.seed,
    )
    n = s.replicas
    return Prediction(s, mem, sim, sim.output_tokens_per_s * n, sim.requests_per_s * n)
