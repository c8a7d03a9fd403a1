"""One replica: its backend, its health (a circuit breaker) and its load as this gateway sees it.

Health has three states. `starting`: not yet seen serving. `healthy`: takes traffic.
`unhealthy`: the breaker is open after `failure_threshold` consecutive failures of probes or
requests (or at once, on a refused connection or a dead child); the probes go on, and the
first that succeeds closes the breaker again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from sovllm.engines.base import EngineStats, GenerationRequest, ModelInfo
from sovllm.pool.backends import Backend, ReplicaFailure
from sovllm.pool.children import Child
from sovllm.pool.settings import RoutingSettings

log = logging.getLogger("sovllm.pool")
State = Literal["starting", "healthy", "unhealthy"]


class Failable(Protocol):
    """A request in flight on a replica (stream.PoolStream)."""

    @property
    def started(self) -> bool:
        """An output has come from the replica for it."""
        ...

    def replica_down(self, reason: str) -> None: ...


class Replica:
    def __init__(
        self,
        name: str,
        kind: str,
        url: str,
        model_id: str,
        backend: Backend,
        count_tokens: Callable[[GenerationRequest], int],
        settings: RoutingSettings,
    ) -> None:
        self.name = name
        self.kind = kind
        self.url = url
        self.model_id = model_id
        self.backend = backend
        self.count_tokens = count_tokens
        self._settings = settings
        self.state: State = "starting"
        self.info: ModelInfo | None = None
        self._stats: EngineStats | None = None
        self.outstanding = 0
        self.failures = 0
        self.last_error = ""
        self.changed_at = time.monotonic()
        self.progress_at = 0.0
        """When a request on this replica last received an output (time.monotonic)."""
        self.child: Child | None = None
        """The process behind the replica, when this gateway started it."""
        self.max_outstanding: int | None = None
        """Requests this gateway may have in flight here; past it the replica counts as full."""
        self.streams: set[Failable] = set()
        """Requests in flight here, ended as replica failures when the breaker opens."""
        self._exited: str | None = None
        self.draining = False
        """Left its group (discovery): takes no new request, leaves once none is in flight."""

    @property
    def stats(self) -> EngineStats | None:
        return self.backend.live_stats() or self._stats

    @property
    def healthy(self) -> bool:
        return self.state == "healthy" and self.backend.alive() is not False

    def succeeded(self) -> None:
        self.failures = 0
        if self.state != "healthy" and self.info is not None:
            log.info("replica %s is healthy", self.name)
            self._set("healthy")

    def failed(self, error: str, hard: bool = False) -> None:
        """A probe or request failed; `hard` opens the breaker at once (the replica is gone).

        When the breaker opens, the replica's running and waiting counts are forgotten, and the
        requests still in flight on it end as replica failures: those without a first token
        fail over, the others end with an error, rather than wait on a replica that is gone.
        """
        self.failures += 1
        self.last_error = error
        if self.state != "unhealthy" and (
            hard or self.failures >= self._settings.failure_threshold
        ):
            log.warning("replica %s leaves the pool: %s", self.name, error)
            self._set("unhealthy")
            self._stats = None
            for stream in list(self.streams):
                stream.replica_down(error)

    def child_exited(self, reason: str) -> None:
        """Called from the supervisor's thread: the loop's next probe takes the replica out."""
        self._exited = reason

    def _set(self, state: State) -> None:
        self.state = state
        self.changed_at = time.monotonic()

    async def probe(self) -> None:
        exited, self._exited = self._exited, None
        if exited is not None:
            self.failed(exited, hard=True)
        try:
            result = await asyncio.wait_for(self.backend.probe(), self._settings.probe_timeout_s)
        except TimeoutError:
            if self._stats is not None:
                # The replica's last word on its load is stale now: until a probe answers,
                # its load is what this gateway has in flight there (as for an upstream that
                # reports none); its counters (the prefix cache's) keep their last values.
                self._stats = dataclasses.replace(self._stats, running=self.outstanding, waiting=0)
            # A server that answers one request at a time (llama.cpp's, for one) queues the
            # probe behind its work. While every request on it still waits for its first
            # output (a prefill), taking a request proves it alive for the grace; once tokens
            # flow, their stopping with the probe's is a hang, found as fast as when idle.
            s = self._settings
            prefilling = bool(self.streams) and not any(r.started for r in self.streams)
            quiet = s.busy_probe_grace_s if prefilling else s.probe_timeout_s
            if time.monotonic() - self.progress_at > quiet:
                self.failed(
                    f"no answer to the health probe within {self._settings.probe_timeout_s} s"
                )
            return
        except ReplicaFailure as exc:
            self.failed(str(exc), hard=exc.hard and self.state == "healthy")
            return
        except Exception as exc:  # a malformed answer: a failed probe, never a dead prober
            self.failed(f"bad health answer: {exc!r}")
            return
        if result.model.id != self.model_id:
            self.failed(f"serves {result.model.id!r}, not {self.model_id!r}", hard=True)
            return
        self.info, self._stats = result.model, result.stats
        self.succeeded()

    async def probe_forever(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self._settings.probe_interval_s)

    def describe(self) -> dict[str, object]:
        stats = self.stats
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "model": self.model_id,
            "state": self.state,
            "draining": self.draining,
            "running": stats.running if stats else None,
            "waiting": stats.waiting if stats else None,
            "outstanding": self.outstanding,
            "last_error": self.last_error or None,
            "pid": self.child.pid if self.child else None,
            "restarts": self.child.restarts if self.child else 0,
        }
