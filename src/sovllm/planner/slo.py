"""Service-level objectives: limits on latency statistics, shared by the planner (which sizes
for them) and the bench (which measures against them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

STATS = ("mean", "p50", "p90", "p95", "p99", "p999")
SLO_METRICS = ("ttft", "tpot", "itl", "e2e", "queue_delay")


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
    def p95(cls, ttft_s: float, tpot_s: float) -> SLO:
        """The planner's SLO: TTFT p95 and TPOT p95."""
        return cls((Constraint("ttft", "p95", ttft_s), Constraint("tpot", "p95", tpot_s)))

    @classmethod
    def parse(cls, text: str | None) -> SLO:
        """`ttft_p95=1.0,tpot_p95=0.1`; a bare metric (`ttft=1`) means its p99. Raises
        ValueError with a message fit for a usage error."""
        if not text:
            return cls()
        out: list[Constraint] = []
        for term in text.split(","):
            key, sep, value = term.strip().partition("=")
            if not sep:
                raise ValueError(f"expected METRIC_STAT=SECONDS, got '{term.strip()}'")
            metric, _, stat = key.strip().lower().partition("_p")
            stat = f"p{stat}" if stat else "p99"
            if key.strip().lower().endswith("_mean"):
                metric, stat = key.strip().lower()[: -len("_mean")], "mean"
            if metric not in SLO_METRICS:
                raise ValueError(f"unknown metric '{metric}'; choose {', '.join(SLO_METRICS)}")
            if stat not in STATS:
                raise ValueError(f"unknown statistic '{stat}'; choose {', '.join(STATS)}")
            try:
                limit = float(value)
            except ValueError:
                raise ValueError(f"'{value}' is not a number of seconds") from None
            if not (math.isfinite(limit) and limit > 0):
                raise ValueError(f"the limit of {key.strip()} must be above 0, got {value}")
            out.append(Constraint(metric, stat, limit))
        return cls(tuple(out))

    def limit(self, metric: str, stat: str) -> float | None:
        """The limit on `stat` of `metric`, or None if the SLO sets none."""
        return next(
            (c.limit_s for c in self.constraints if (c.metric, c.stat) == (metric, stat)), None
        )

    @property
    def ttft_p95_s(self) -> float:
        """The planner's TTFT p95 limit (infinite when the SLO sets none)."""
        return self._p95("ttft")

    @property
    def tpot_p95_s(self) -> float:
        """The planner's TPOT p95 limit (infinite when the SLO sets none)."""
        return self._p95("tpot")

    def _p95(self, metric: str) -> float:
        limit = self.limit(metric, "p95")
        return math.inf if limit is None else limit

    def __bool__(self) -> bool:
        return bool(self.constraints)

    def __str__(self) -> str:
        return ", ".join(f"{c.metric} {c.stat} ≤ {c.limit_s:g} s" for c in self.constraints)
