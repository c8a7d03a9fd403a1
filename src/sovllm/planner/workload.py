"""Workload description: token-length ranges and the load pattern the simulator drives."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

LoadKind = Literal["offline", "concurrency", "rate", "users"]


@dataclass(frozen=True)
class Lengths:
    """Token lengths drawn uniformly from [lo, hi]."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str) -> Lengths:
        """'400' or '300-500'. Raises ValueError with a message fit for a usage error."""
        parts = text.strip().split("-")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"expected N or MIN-MAX tokens, got '{text}'")
        lo = int(parts[0])
        hi = int(parts[-1])
        if lo < 1:
            raise ValueError(f"token counts must be at least 1, got '{text}'")
        if lo > hi:
            raise ValueError(f"range minimum {lo} is above its maximum {hi}")
        return cls(lo, hi)

    @property
    def mean(self) -> float:
        return (self.lo + self.hi) / 2

    def sample(self, rng: random.Random) -> int:
        return self.lo if self.lo == self.hi else rng.randint(self.lo, self.hi)

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


@dataclass(frozen=True)
class Load:
    kind: LoadKind
    value: float = 0.0  # concurrency C, rate R (req/s) or users U
    think_time_s: float = 0.0

    def describe(self) -> str:
        if self.kind == "offline":
            return "offline"
        if self.kind == "concurrency":
            return f"concurrency {self.value:g}"
        if self.kind == "rate":
            return f"Poisson {self.value:g} req/s"
        return f"{self.value:g} users, think {self.think_time_s:g} s"
