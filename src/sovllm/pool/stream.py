"""One request's outputs across replicas: the failover before its first token, its deadline
for that token, and its cancellation, whichever replica it is on (the pool opens it)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sovllm.engines.base import (
    EngineError,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    RequestStream,
    Timings,
)
from sovllm.pool.backends import replica_failure
from sovllm.pool.replica import Replica

if TYPE_CHECKING:  # the pool opens streams; a stream asks its pool for the next replica
    from sovllm.pool.router import Pool

log = logging.getLogger("sovllm.pool")


@dataclasses.dataclass(frozen=True)
class Routed:
    """What routing a request needs, from opening it to each failover's next replica."""

    model: str
    request: GenerationRequest
    key: str | None
    """The affinity key (prefix_affinity), if any."""
    prompt_tokens: int


class PoolStream:
    """A request's outputs across replicas: the failover happens here, before the first token.

    It also holds the request's deadline for a first token (absolute, so a failover does not
    restart it) and its cancellation (client gone, or cut by the stop switch), which apply to
    whichever replica the request is on, including one it has just moved to.
    """

    def __init__(self, pool: Pool, routed: Routed, timeout_s: float) -> None:
        self.request_id = routed.request.request_id
        self.prompt_tokens = routed.prompt_tokens
        self._pool, self._routed = pool, routed
        self._tried: set[str] = set()
        self.replica: Replica | None = None
        self._inner: RequestStream | None = None
        self._cancelled = False
        self._arrival = time.perf_counter()
        self._timeout_s = timeout_s
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = (
            loop.call_later(timeout_s, self._expire) if timeout_s < math.inf else None
        )
        self._expired = False
        self._sent = False
        """A token has been passed on: from here, a failure cannot be hidden by a retry."""
        self._down: str | None = None
        self._started = False

    async def connect(self) -> None:
        """Open the request on the next replica in the policy's order (EngineError if none)."""
        self.replica, self._inner = await self._pool._connect(self._routed, self._tried)
        self.replica.streams.add(self)
        self.replica.progress_at = time.monotonic()  # it took the request: alive
        self._started = False  # on this replica
        self._pool.policy.remember(self._routed.key, self.replica.name)
        if self._cancelled or self._expired:
            self._inner.cancel()  # cut, left or timed out while it was moving

    def _expire(self) -> None:
        self._timer = None
        if not self._sent:
            self._expired = True
            if self._inner is not None:
                self._inner.cancel()

    @property
    def started(self) -> bool:
        """An output has come from the replica for this request (see Replica.probe)."""
        return self._started

    def replica_down(self, reason: str) -> None:
        """The replica's breaker opened while this request was on it."""
        fail = getattr(self._inner, "fail", None)
        if fail is not None:  # an HTTP stream: end it now, it would wait for a dead peer
            fail(reason)

    def _timeout_output(self) -> GenerationOutput:
        return self._final(
            0,
            f"the request waited {self._timeout_s:g} s without a first token "
            "and was dropped (queue timeout)",
        )

    async def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        completion = 0
        try:
            while self._inner is not None:
                assert self.replica is not None
                try:
                    async for out in self._inner:
                        self.replica.progress_at = time.monotonic()
                        self._started = True
                        if out.finish_reason == "abort" and self._expired and not self._sent:
                            yield self._timeout_output()
                            return
                        if not self._sent and (out.token_ids or out.text):
                            self._sent = True
                            if self._timer is not None:
                                self._timer.cancel()  # the first token came: no deadline now
                                self._timer = None
                        completion = out.completion_tokens
                        yield out
                        if out.finished:
                            return
                    return
                except Exception as raised:  # whatever the stream raised: the replica failed
                    exc = replica_failure(raised, f"the stream on {self.replica.name}")
                    self._release()
                    self.replica.failed(str(exc), hard=exc.hard)
                    if self._sent or self._cancelled:
                        yield self._final(
                            completion, f"the replica serving this request failed: {exc}"
                        )
                        return
                    if self._expired:
                        yield self._timeout_output()
                        return
                    log.warning(
                        "retrying %s after %s failed: %s", self.request_id, self.replica.name, exc
                    )
                    try:
                        await self.connect()
                    except EngineError as again:
                        yield self._final(0, str(again))
                        return
        finally:
            self.close()

    def _final(self, completion: int, error: str) -> GenerationOutput:
        now = time.perf_counter()
        reason: FinishReason = "abort" if self._cancelled else "error"
        timings = Timings(self._arrival, finished=now)
        message = None if self._cancelled else error
        return GenerationOutput(
            "", (), self.prompt_tokens, completion, reason, timings, message, now
        )

    def _release(self) -> None:
        if self._inner is not None:
            assert self.replica is not None
            self._inner.cancel()
            self._inner = None
            self.replica.streams.discard(self)
            self._pool.let_go(self.replica)

    def close(self) -> None:
        """Let go of the replica (idempotent): for a stream that is never read, too."""
        self._cancelled = self._cancelled or self._inner is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._release()

    def cancel(self) -> None:
        self._cancelled = True
        if self._inner is not None:
            self._inner.cancel()
