"""What a bench run is asked to do: lengths, think time, SLOs, the load, its bounds.

The lengths, the think time, the load and the SLO are the planner's types
(`sovllm.planner.workload`, `sovllm.planner.slo`), so that `--compare-plan` hands the planner
exactly what the bench ran. The parsers here name the flag: they raise `BadSpec(flag, message)`
so the command line can turn them into a usage error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sovllm.planner.slo import SLO
from sovllm.planner.workload import Lengths, ThinkTime

T = TypeVar("T")


class BadSpec(ValueError):
    """A value the user gave that cannot describe a workload."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def _flagged(parse: Callable[[str], T], flag: str, text: str) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise BadSpec(flag, str(exc)) from None


def parse_lengths(flag: str, text: str) -> Lengths:
    """N, MIN-MAX or lognormal:MEDIAN,P95 tokens: the planner's own forms and parser."""
    return _flagged(Lengths.parse, flag, text)


def parse_think(flag: str, text: str) -> ThinkTime:
    return _flagged(ThinkTime.parse, flag, text)


def parse_slo(flag: str, text: str | None) -> SLO:
    return SLO.parse(text) if not text else _flagged(SLO.parse, flag, text)


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
