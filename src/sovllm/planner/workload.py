"""Workload description: token-length distributions and the load pattern the simulator drives."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LoadKind = Literal["offline", "concurrency", "rate", "users", "trace"]
LengthKind = Literal["uniform", "lognormal", "file"]

# z of the 95th and 99.9th percentiles of the standard normal distribution.
Z95 = 1.6448536269514722
Z999 = 3.090232306167813


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class Lengths:
    """Token lengths of one side of a request.

    - uniform: drawn uniformly from [lo, hi];
    - lognormal: a lognormal with the given median and 95th percentile, rounded and clipped to
      [1, hi] where hi is its 99.9th percentile (memory is planned for hi tokens, and a
      distribution without an end cannot be planned for);
    - file: the values of a lengths file, request k taking value k (cycling), so that the
      prompt and output of one line stay paired.
    """

    lo: int
    hi: int
    kind: LengthKind = "uniform"
    median: float = 0.0
    p95: float = 0.0
    values: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Lengths:
        """'400', '300-500' or 'lognormal:MEDIAN,P95'. Raises ValueError with a message fit for
        a usage error."""
        text = text.strip()
        if text.lower().startswith("lognormal:"):
            return cls.lognormal(text)
        parts = text.split("-")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"expected N, MIN-MAX or lognormal:MEDIAN,P95 tokens, got '{text}'")
        lo = int(parts[0])
        hi = int(parts[-1])
        if lo < 1:
            raise ValueError(f"token counts must be at least 1, got '{text}'")
        if lo > hi:
            raise ValueError(f"range minimum {lo} is above its maximum {hi}")
        return cls(lo, hi)

    @classmethod
    def lognormal(cls, text: str) -> Lengths:
        fields = text.partition(":")[2].split(",")
        try:
            median, p95 = (float(f) for f in fields)
        except ValueError:
            raise ValueError(
                f"expected lognormal:MEDIAN,P95 (e.g. lognormal:200,900), got '{text}'"
            ) from None
        if not (math.isfinite(median) and math.isfinite(p95)) or median < 1:
            raise ValueError(f"lognormal median must be a number of at least 1, got '{text}'")
        if not p95 > median:
            raise ValueError(f"lognormal P95 must be above the median, got '{text}'")
        sigma = math.log(p95 / median) / Z95
        hi = max(1, round(median * math.exp(Z999 * sigma)))
        return cls(1, hi, "lognormal", median, p95)

    @classmethod
    def from_values(cls, values: list[int]) -> Lengths:
        return cls(min(values), max(values), "file", values=tuple(values))

    @property
    def sigma(self) -> float:
        return math.log(self.p95 / self.median) / Z95

    @property
    def mean(self) -> float:
        if self.kind == "file":
            return sum(self.values) / len(self.values)
        if self.kind == "lognormal":
            # Mean of the lognormal clipped at hi: E[X; X <= hi] + hi * P(X > hi).
            mu, s, c = math.log(self.median), self.sigma, math.log(self.hi)
            below = math.exp(mu + s * s / 2) * _phi((c - mu - s * s) / s)
            return below + self.hi * (1.0 - _phi((c - mu) / s))
        return (self.lo + self.hi) / 2

    def sample(self, rng: random.Random, index: int) -> int:
        """Length of request `index`; random kinds draw from `rng`, a file takes its line."""
        if self.kind == "file":
            return self.values[index % len(self.values)]
        if self.kind == "lognormal":
            x = rng.lognormvariate(math.log(self.median), self.sigma)
            return min(self.hi, max(1, round(x)))
        return self.lo if self.lo == self.hi else rng.randint(self.lo, self.hi)

    @property
    def varies(self) -> bool:
        return self.lo != self.hi

    def __str__(self) -> str:
        if self.kind == "lognormal":
            return f"lognormal:{self.median:g},{self.p95:g}"
        if self.kind == "file":
            return f"{len(self.values)} from file, {self.lo}-{self.hi}, mean {self.mean:.0f}"
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


def read_lengths_file(path: Path) -> tuple[Lengths, Lengths]:
    """Prompt and output lengths of a JSONL file, one `{"input_tokens": N, "output_tokens": M}`
    a line, in file order. `prompt_tokens` and `max_tokens` are read as `input_tokens` and
    `output_tokens`, so a `sovllm bench --replay` trace with token counts also serves (its timestamps are ignored: the planner's
    load sets the arrivals). An output of 0 is a request that produces no token. Raises
    ValueError with a message fit for a usage error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    prompts: list[int] = []
    outputs: list[int] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt = row.get("input_tokens", row.get("prompt_tokens"))
            out = row["output_tokens"] if "output_tokens" in row else row["max_tokens"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(
                f'{path}:{n}: expected {{"input_tokens": N, "output_tokens": M}}, got {line[:80]!r}'
            ) from None
        if not (isinstance(prompt, int) and not isinstance(prompt, bool) and prompt >= 1):
            raise ValueError(
                f"{path}:{n}: input_tokens must be a whole number >= 1, got {prompt!r}"
            )
        if not (isinstance(out, int) and not isinstance(out, bool) and out >= 0):
            raise ValueError(f"{path}:{n}: output_tokens must be a whole number >= 0, got {out!r}")
        prompts.append(prompt)
        outputs.append(out)
    if not prompts:
        raise ValueError(f"{path} holds no requests")
    return Lengths.from_values(prompts), Lengths.from_values(outputs)


@dataclass(frozen=True)
class Load:
    kind: LoadKind
    value: float = 0.0  # concurrency C, rate R (req/s) or users U
    think_time_s: float = 0.0
    # A trace: the recorded requests' arrival times (s from the first), replayed as they came.
    arrivals: tuple[float, ...] = ()

    def describe(self) -> str:
        if self.kind == "offline":
            return "offline"
        if self.kind == "concurrency":
            return f"concurrency {self.value:g}"
        if self.kind == "rate":
            return f"Poisson {self.value:g} req/s"
        if self.kind == "trace":
            return f"replay of {len(self.arrivals)} recorded requests"
        return f"{self.value:g} users, think {self.think_time_s:g} s"
