"""Workload description: token-length distributions and the load pattern the simulator drives."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LoadKind = Literal["offline", "concurrency", "rate", "users", "trace", "replay"]
LengthKind = Literal["uniform", "lognormal", "file"]

# The forms --input-tokens/--prompt-tokens/--output-tokens take, in `plan` and in `bench`.
LENGTHS_HELP = "N, MIN-MAX (uniform) or lognormal:MEDIAN,P95 (seeded draws)."

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
            raise ValueError(f"the range minimum {lo} is above the maximum {hi}")
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

    def sample(self, rng: random.Random, index: int = 0) -> int:
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
class ThinkTime:
    """Seconds a user waits between an answer and the next question.

    "5" is exponential with mean 5 s (memoryless, as users who read at their own pace);
    "2-8" is uniform; "0" sends the next turn at once.
    """

    lo: float
    hi: float
    kind: Literal["exponential", "uniform"]

    @classmethod
    def exponential(cls, mean_s: float) -> ThinkTime:
        return cls(mean_s, mean_s, "exponential")

    @classmethod
    def parse(cls, text: str) -> ThinkTime:
        """'S' or 'MIN-MAX' seconds. Raises ValueError with a message fit for a usage error."""
        parts = text.strip().split("-")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected seconds S or MIN-MAX, got '{text}'") from None
        if len(values) not in (1, 2) or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"expected seconds S or MIN-MAX, 0 or more, got '{text}'")
        if len(values) == 1:
            return cls.exponential(values[0])
        if values[0] > values[1]:
            raise ValueError(f"the minimum {values[0]:g} is above the maximum {values[1]:g}")
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


NO_THINK = ThinkTime.exponential(0.0)


@dataclass(frozen=True)
class Load:
    """The load pattern, as the bench drives it and the planner simulates it.

    `value` is the concurrency C, the rate R (requests/s), the users U, or a replay's speed.
    `turns`, `burstiness`, `max_concurrency` and `replay_path` shape what the bench sends; the
    planner's simulator reads the kind, the value, the think time and a trace's `arrivals`.
    """

    kind: LoadKind
    value: float = 0.0
    think: ThinkTime = NO_THINK
    # A trace: the recorded requests' arrival times (s from the first), replayed as they came.
    arrivals: tuple[float, ...] = ()
    turns: int = 1
    burstiness: float = 1.0  # gamma shape of the gaps between arrivals; 1 is Poisson
    max_concurrency: int | None = None
    replay_path: str | None = None  # a bench trace file, replayed at `value` times its speed

    @property
    def think_time_s(self) -> float:
        return self.think.mean

    @property
    def unit(self) -> str:
        units = {"users": "users", "rate": "req/s", "concurrency": "in flight", "replay": "x"}
        return units.get(self.kind, "")

    def describe(self) -> str:
        if self.kind == "offline":
            return "offline"
        if self.kind == "concurrency":
            return f"concurrency {self.value:g}"
        if self.kind == "rate":
            shape = "Poisson" if self.burstiness == 1 else f"gamma(k={self.burstiness:g})"
            cap = f", at most {self.max_concurrency} in flight" if self.max_concurrency else ""
            return f"{shape} {self.value:g} req/s{cap}"
        if self.kind == "trace":
            return f"replay of {len(self.arrivals)} recorded requests"
        if self.kind == "replay":
            return f"replay of {self.replay_path} at {self.value:g}x"
        users = f"{self.value:g} user" + ("" if self.value == 1 else "s")
        turns = f", {self.turns} turns" if self.turns > 1 else ""
        return f"{users}, think {self.think}{turns}"

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"mode": self.kind, "value": self.value}
        if self.kind == "users":
            doc |= {
                "think_time_s": {"kind": self.think.kind, "lo": self.think.lo, "hi": self.think.hi},
                "turns": self.turns,
            }
        if self.kind == "rate":
            doc |= {"burstiness": self.burstiness, "max_concurrency": self.max_concurrency}
        if self.kind == "replay":
            doc |= {"path": self.replay_path, "speed": self.value}
        return doc
