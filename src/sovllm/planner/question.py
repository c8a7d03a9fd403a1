"""The sizing question `sovllm plan size` answers: a model, the hardware to choose from, the
users and their traffic, the SLO and the prices. `check()` validates it as a whole, so the
command line only parses flags into it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sovllm.planner.cost import CostParams
from sovllm.planner.errors import ScenarioError
from sovllm.planner.predict import MAX_CLIENTS, check_context
from sovllm.planner.slo import SLO
from sovllm.planner.specs import PRECISIONS, Engine, Hardware, Model
from sovllm.planner.workload import Lengths, Load

RANK_BY = ("onprem", "cloud")


@dataclass(frozen=True)
class SizingQuestion:
    model: Model
    engine: Engine
    gpus: tuple[Hardware, ...]
    precisions: tuple[str, ...]
    users: int
    prompt: Lengths
    output: Lengths
    think_time_s: float
    slo: SLO
    cost: CostParams
    max_tp: int = 8
    rank_by: str = "onprem"
    cached_fraction: float = 0.0
    # `--from-usage --replay`: the recorded requests' arrivals, simulated as they came.
    trace: Load | None = None

    def check(self) -> None:
        """Raise ScenarioError naming the first thing that cannot be sized."""
        if self.users < 1:
            raise ScenarioError("users", f"must be at least 1, got {self.users}")
        if self.users > MAX_CLIENTS:
            raise ScenarioError(
                "users",
                f"must be at most {MAX_CLIENTS:,} users (the planner's limit), got {self.users}",
            )
        think = self.think_time_s
        if not math.isfinite(think):
            raise ScenarioError("think_time_s", f"must be a finite number, got {think}")
        if think < 0:
            raise ScenarioError("think_time_s", f"must be 0 or more, got {think}")
        for c in self.slo.constraints:
            if not math.isfinite(c.limit_s):
                raise ScenarioError(f"slo.{c.metric}", f"must be a finite number, got {c.limit_s}")
            if not c.limit_s > 0:
                raise ScenarioError(f"slo.{c.metric}", f"must be above 0, got {c.limit_s}")
        if self.max_tp < 1:
            raise ScenarioError("max_tp", f"must be at least 1, got {self.max_tp}")
        if self.rank_by not in RANK_BY:
            raise ScenarioError("rank_by", f"choose onprem or cloud, got '{self.rank_by}'")
        self.cost.check()
        if not self.precisions:
            raise ScenarioError("precisions", "give at least one precision")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ScenarioError(
                    "precisions", f"unknown precision '{p}'; choose from {', '.join(PRECISIONS)}"
                )
        if not self.gpus:
            raise ScenarioError("gpus", "give at least one GPU type")
        if not 0 <= self.cached_fraction < 1:
            raise ScenarioError(
                "cached_fraction", f"must be at least 0 and below 1, got {self.cached_fraction}"
            )
        check_context(self.model, self.prompt, self.output)
