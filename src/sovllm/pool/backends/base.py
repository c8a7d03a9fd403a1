"""What every backend is and how one fails: the Backend protocol, a health probe's answer, and
ReplicaFailure (the replica failed, not the request).

Whatever the HTTP stack raises while talking to a replica is a ReplicaFailure, its own types or
not: on a peer that dies mid-connect, httpcore and anyio have raised AttributeError.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import httpx

from sovllm.engines.base import (
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    RequestStream,
    Timings,
)

log = logging.getLogger("sovllm.pool")


class ReplicaFailure(Exception):
    """The replica, not the request, failed: refused connection, reset, 5xx, cut stream.

    `hard`: the replica is gone (no connection, a reset, a dead child), so its breaker opens at
    once; an error answer only counts towards the breaker's threshold.
    """

    def __init__(self, message: str, hard: bool = True) -> None:
        super().__init__(message)
        self.hard = hard


def replica_failure(exc: Exception, where: str) -> ReplicaFailure:
    """What an exception raised while talking to a replica (at `where`) means: its failure.

    httpx's own errors (refused, reset, timed out) say the replica is gone: hard. Anything else
    comes from below httpx (httpcore, anyio, the socket) or from a backend's bug, and proves
    nothing about the replica's health: soft, and logged with its traceback, since it is a bug
    somewhere. Its message stays in that log: it could quote a request, and the failure's text
    reaches the client and the audit log. Only `Exception`s: cancellation (a BaseException)
    always propagates.
    """
    if isinstance(exc, ReplicaFailure):
        return exc
    if isinstance(exc, httpx.HTTPError):
        return ReplicaFailure(f"{exc.__class__.__name__}: {exc}")
    log.warning("%s raised %r", where, exc, exc_info=exc)
    return ReplicaFailure(f"{where} raised {exc.__class__.__name__}", hard=False)


@dataclass(frozen=True)
class Probe:
    model: ModelInfo
    stats: EngineStats | None
    """Running and waiting counts, where the backend reports them."""


class Backend(Protocol):
    async def start(self) -> None:
        """Load what runs in this process, if anything (blocking work goes to a thread)."""
        ...

    async def open(self, request: GenerationRequest, prompt_tokens: int) -> RequestStream: ...

    async def probe(self) -> Probe:
        """Raise ReplicaFailure when the replica is not serving."""
        ...

    def live_stats(self) -> EngineStats | None:
        """Running and waiting counts now, where they are at hand (else the last probe's)."""
        ...

    def alive(self) -> bool | None:
        """Whether it serves, where that is known without a probe (in this process)."""
        ...

    async def close(self) -> None: ...


def aborted(prompt_tokens: int, completion_tokens: int, arrival: float) -> GenerationOutput:
    """The terminal output of a request cancelled on its way (the client left, or a cut)."""
    now = time.perf_counter()
    return GenerationOutput(
        "", (), prompt_tokens, completion_tokens, "abort", Timings(arrival, finished=now), time=now
    )
