"""What a bench run is asked to do: lengths, think time, SLOs, the load, its bounds.

Parsers raise `BadSpec(flag, message)` so the command line can turn them into a usage error
that names the flag.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

LoadMode = Literal["users", "rate", "concurrency", "replay"]
STATS = ("mean", "p50", "p90", "p95", "p99", "p999")
SLO_METRICS = ("ttft", "tpot", "itl", "e2e", "queue_delay")


class BadSpec(ValueError):
    """A value the user gave that cannot describe a workload."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class Lengths:
    """Token counts drawn uniformly from [lo, hi]."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, flag: str, text: str) -> Lengths:
        parts = text.strip().split("-")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise BadSpec(flag, f"expected N or MIN-MAX tokens, got '{text}'")
        lo, hi = int(parts[0]), int(parts[-1])
        if lo < 1:
            raise BadSpec(flag, f"token counts must be at least 1, got '{text}'")
        if lo > hi:
            raise BadSpec(flag, f"the minimum {lo} is above the maximum {hi}")
        return cls(lo, hi)

    def sample(self, rng: random.Random) -> int:
        return self.lo if self.lo == self.hi else rng.randint(self.lo, self.hi)

    @property
    def mean(self) -> float:
        return (self.lo + self.hi) / 2

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


@dataclass(frozen=True)
class ThinkTime:
    """Seconds a user waits between an answer and the next question.

    "5" is exponential with mean 5 s (memoryless, as users who read at their own pace);
    "2-8" is uniform; "0" sends the next turn at once.
    """

    lo: float
    hi: float
    kind: Literal["exponential", "uniform"]

    @classmethod
    def parse(cls, flag: str, text: str) -> ThinkTime:
        parts = text.strip().split("-")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise BadSpec(flag, f"expected seconds S or MIN-MAX, got '{text}'") from None
        if len(values) not in (1, 2) or not all(math.isfinite(v) and v >= 0 for v in values):
            raise BadSpec(flag, f"expected seconds S or MIN-MAX, 0 or more, got '{text}'")
        if len(values) == 1:
            return cls(values[0], values[0], "exponential")
        if values[0] > values[1]:
            raise BadSpec(flag, f"the minimum {values[0]:g} is above the maximum {values[1]:g}")
        return cls(values[0], values[1], "uniform")

    @property
    def mean(self) -> float:
        return (self.lo + self.hi) / 2

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.lo, self.hi)
        return rng.expovariate(1 / self.lo) if self.lo > 0 else 0.0

    def __str__(self) -> str:
        if self.kind == "uniform":
            return f"{self.lo:g}-{self.hi:g} s uniform"
        return f"{self.lo:g} s exponential"


@dataclass(frozen=True)
class Constraint:
    """One SLO term: `stat` of `metric` must be at most `limit_s` seconds."""

    metric: str
    stat: str
    limit_s: float

    @property
    def key(self) -> str:
        return f"{self.metric}_{self.stat}"


@dataclass(frozen=True)
class SLO:
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(cls, flag: str, text: str | None) -> SLO:
        """`ttft_p95=1.0,tpot_p95=0.1`; a bare metric (`ttft=1`) means its p99."""
        if not text:
            return cls()
        out: list[Constraint] = []
        for term in text.split(","):
            key, sep, value = term.strip().partition("=")
            if not sep:
                raise BadSpec(flag, f"expected METRIC_STAT=SECONDS, got '{term.strip()}'")
            metric, _, stat = key.strip().lower().partition("_p")
            stat = f"p{stat}" if stat else "p99"
            if key.strip().lower().endswith("_mean"):
                metric, stat = key.strip().lower()[: -len("_mean")], "mean"
            if metric not in SLO_METRICS:
                raise BadSpec(flag, f"unknown metric '{metric}'; choose {', '.join(SLO_METRICS)}")
            if stat not in STATS:
                raise BadSpec(flag, f"unknown statistic '{stat}'; choose {', '.join(STATS)}")
            try:
                limit = float(value)
            except ValueError:
                raise BadSpec(flag, f"'{value}' is not a number of seconds") from None
            if not (math.isfinite(limit) and limit > 0):
                raise BadSpec(flag, f"the limit of {key.strip()} must be above 0, got {value}")
            out.append(Constraint(metric, stat, limit))
        return cls(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.constraints)

    def __str__(self) -> str:
        return ", ".join(f"{c.metric} {c.stat} ≤ {c.limit_s:g} s" for c in self.constraints)


@dataclass(frozen=True)
class Load:
    """The load pattern. `value` is users, requests/s, or in-flight requests."""

    mode: LoadMode
    value: float
    think: ThinkTime = ThinkTime(0, 0, "exponential")
    turns: int = 1
    burstiness: float = 1.0
    max_concurrency: int | None = None
    replay_path: str | None = None

    def with_value(self, value: float) -> Load:
        return Load(
            self.mode,
            value,
            self.think,
            self.turns,
            self.burstiness,
            self.max_concurrency,
            self.replay_path,
        )

    @property
    def unit(self) -> str:
        return {"users": "users", "rate": "req/s", "concurrency": "in flight", "replay": "x"}[
            self.mode
        ]

    def describe(self) -> str:
        if self.mode == "users":
            users = f"{self.value:g} user" + ("" if self.value == 1 else "s")
            return f"{users}, think {self.think}, {self.turns} turns"
        if self.mode == "rate":
            shape = "Poisson" if self.burstiness == 1 else f"gamma(k={self.burstiness:g})"
            cap = f", at most {self.max_concurrency} in flight" if self.max_concurrency else ""
            return f"{shape} {self.value:g} req/s{cap}"
        if self.mode == "concurrency":
            return f"{self.value:g} requests in flight"
        return f"replay of {self.replay_path} at {self.value:g}x"

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"mode": self.mode, "value": self.value}
        if self.mode == "users":
            doc |= {
                "think_time_s": {"kind": self.think.kind, "lo": self.think.lo, "hi": self.think.hi},
                "turns": self.turns,
            }
        if self.mode == "rate":
            doc |= {"burstiness": self.burstiness, "max_concurrency": self.max_concurrency}
        if self.mode == "replay":
            doc |= {"path": self.replay_path, "speed": self.value}
        return doc


@dataclass(frozen=True)
class RunBounds:
    """Every run stops at whichever comes first: `duration_s` measured or `max_requests`.

    Requests scheduled during `warmup_s` load the server but are not counted. After the load
    stops, requests in flight get `grace_s` to finish and are then cancelled as incomplete.
    """

    duration_s: float
    max_requests: int
    warmup_s: float
    grace_s: float = 30.0
    request_timeout_s: float = 300.0


@dataclass(frozen=True)
class Workload:
    prompt: Lengths
    output: Lengths
    ignore_eos: bool = True
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)
