"""The gateway's replica pool: picks a replica per request and retries before the first token.

The API sees one object: it asks for a model's info, counts a prompt's tokens, and opens a
request stream. Behind it, each model has replicas, each with its own health and load. A
request that fails on its replica before any token has reached the client is sent to the next
replica in the policy's order, unnoticed; once tokens have left, a failure ends the stream with
an error output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from sovllm.engines.base import (
    EngineError,
    EngineStats,
    EngineUnavailableError,
    GenerationRequest,
    ModelInfo,
    QueueFullError,
    RequestStream,
)
from sovllm.pool.backends import replica_failure
from sovllm.pool.replica import Replica
from sovllm.pool.routing import Policy
from sovllm.pool.settings import RoutingSettings
from sovllm.pool.stream import PoolStream, Routed

log = logging.getLogger("sovllm.pool")


class ModelNotServedError(EngineError):
    def __init__(self, name: str, served: Sequence[str]) -> None:
        super().__init__(
            f"The model '{name}' does not exist. Available: {', '.join(served) or 'none'}."
        )


class Pool:
    """The replicas, fixed or coming and going (discovery: `add`, `drain`). `replicas` is
    replaced, never changed in place: the metrics and admin listing iterate over one list."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        settings: RoutingSettings,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.replicas = list(replicas)
        self.settings = settings
        self.policy = Policy(settings)
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._groups: dict[str, str] = {}  # a discovered group's model: where its replicas are
        self._followers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._on_shutdown = on_shutdown

    # -- what the API asks -------------------------------------------------------------

    @property
    def model_ids(self) -> list[str]:
        return list(dict.fromkeys([*(r.model_id for r in self.replicas), *self._groups]))

    def models(self) -> list[ModelInfo]:
        """The models with at least one replica that has been seen serving."""
        out: dict[str, ModelInfo] = {}
        for r in self.replicas:
            if r.info is not None and (r.healthy or r.model_id not in out):
                out.setdefault(r.model_id, r.info)
        return list(out.values())

    def model(self, name: str) -> ModelInfo:
        """The model's info, or ModelNotServedError naming the models there are."""
        known = self._of(name)
        info = next((r.info for r in known if r.healthy and r.info), None)
        info = info or next((r.info for r in known if r.info), None)
        if info is None:
            raise EngineUnavailableError(f"no replica of '{name}' has started yet")
        return info

    def count_tokens(self, name: str, request: GenerationRequest) -> int:
        return self._of(name)[0].count_tokens(request)

    def stats(self, name: str | None = None) -> EngineStats:
        """The model's replicas' stats, summed (all models: name None).

        An upstream that reports none counts what this gateway has in flight there as running.
        """
        total = dict.fromkeys((f.name for f in dataclasses.fields(EngineStats)), 0)
        for r in self.replicas:
            if name is not None and r.model_id != name:
                continue
            s = r.stats
            if s is None:
                total["running"] += r.outstanding
                continue
            for key, value in dataclasses.asdict(s).items():
                total[key] += value
        return EngineStats(**total)

    @property
    def healthy(self) -> bool:
        return any(r.healthy for r in self.replicas)

    async def open(
        self,
        name: str,
        request: GenerationRequest,
        key: str | None,
        prompt_tokens: int,
        queue_timeout_s: float | None = None,
    ) -> PoolStream:
        """Route the request and open its stream; raise an EngineError if no replica takes it.

        `key` is the request's affinity key (prefix_affinity), `prompt_tokens` its count.
        A request without a first token after `queue_timeout_s` (default: the setting) ends
        with an error; one still queued is dropped before it costs compute.
        """
        timeout = min(queue_timeout_s or math.inf, self.settings.queue_timeout_s)
        stream = PoolStream(self, Routed(name, request, key, prompt_tokens), timeout)
        await stream.connect()
        return stream

    def _of(self, name: str) -> list[Replica]:
        replicas = [r for r in self.replicas if r.model_id == name]
        if not replicas and name in self._groups:
            raise EngineUnavailableError(
                f"no replica of '{name}' is available: {self._groups[name]} has none ready"
            )
        if not replicas:
            raise ModelNotServedError(name, self.model_ids)
        return replicas

    async def _connect(self, routed: Routed, tried: set[str]) -> tuple[Replica, RequestStream]:
        name = routed.model
        candidates = [
            r for r in self._of(name) if r.healthy and not r.draining and r.name not in tried
        ]
        full: list[QueueFullError] = []
        errors: list[str] = []
        for replica in self.policy.order(candidates, routed.key):
            if len(tried) >= self.settings.max_attempts:
                break
            if (
                replica.max_outstanding is not None
                and replica.outstanding >= replica.max_outstanding
            ):
                full.append(QueueFullError(replica.outstanding, 1))
                continue
            tried.add(replica.name)
            replica.outstanding += 1
            try:
                stream = await replica.backend.open(routed.request, routed.prompt_tokens)
            except QueueFullError as exc:
                self.let_go(replica)
                full.append(exc)
                continue
            except EngineUnavailableError as exc:
                self.let_go(replica)
                replica.failed(str(exc), hard=True)
                errors.append(f"{replica.name}: {exc}")
                continue
            except EngineError:  # the request's fault (400, context length): no replica takes it
                self.let_go(replica)
                raise
            except Exception as exc:  # anything else opening it is the replica's: try the next
                self.let_go(replica)
                failure = replica_failure(exc, f"opening a request on {replica.name}")
                replica.failed(str(failure), hard=failure.hard)
                errors.append(f"{replica.name}: {failure}")
                continue
            except BaseException:  # cancelled: propagate
                self.let_go(replica)
                raise
            return replica, stream
        if full:
            waiting = self.stats(name).waiting
            raise QueueFullError(waiting, min(e.retry_after_s for e in full))
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise EngineUnavailableError(f"no replica of '{name}' is available{detail}")

    # -- lifecycle ---------------------------------------------------------------------

    def follow(
        self, model_id: str, source: str, run: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """A group whose replicas come and go: `run` (started with the pool) adds and drains
        them. Its model is served, if unavailable, while it has none."""
        self._groups[model_id] = source
        self._followers.append(run)

    async def start(self) -> None:
        """Load in-process engines, probe every replica once, then keep probing."""
        await asyncio.gather(*(r.backend.start() for r in self.replicas))
        await asyncio.gather(*(r.probe() for r in self.replicas))
        self._probes = {r.name: asyncio.create_task(r.probe_forever()) for r in self.replicas}
        for run in self._followers:
            self._spawn(run())

    async def add(self, replica: Replica) -> None:
        """A replica that joined: probed once, then probed and routed to like the others.
        One of the same name still draining takes traffic again instead."""
        same = next((r for r in self.replicas if r.name == replica.name), None)
        if same is not None:
            same.draining = False
            return
        await replica.backend.start()
        await replica.probe()
        self.replicas = [*self.replicas, replica]
        self._probes[replica.name] = asyncio.create_task(replica.probe_forever())
        log.info("replica %s joined the pool (%s)", replica.name, replica.state)

    def drain(self, name: str) -> None:
        """The replica takes no new request, and leaves once those in flight have ended."""
        replica = next((r for r in self.replicas if r.name == name), None)
        if replica is None:
            return
        replica.draining = True
        log.info("replica %s drains (%d requests in flight)", name, replica.outstanding)
        self._leave_if_drained(replica)

    def let_go(self, replica: Replica) -> None:  # a request no longer holds the replica
        replica.outstanding -= 1
        self._leave_if_drained(replica)

    def _leave_if_drained(self, replica: Replica) -> None:
        if not (replica.draining and replica.outstanding == 0 and replica in self.replicas):
            return
        self.replicas = [r for r in self.replicas if r is not replica]
        probing = self._probes.pop(replica.name, None)
        if probing is not None:
            probing.cancel()
        self._spawn(replica.backend.close())
        log.info("replica %s left the pool", replica.name)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        for task in [*self._probes.values(), *self._tasks]:
            task.cancel()
        for r in self.replicas:
            await r.backend.close()
        await asyncio.to_thread(self.stop_children)

    def stop_children(self) -> None:
        """Stop the replicas this gateway started (idempotent; also after a failed start-up)."""
        if self._on_shutdown is not None:
            self._on_shutdown()
