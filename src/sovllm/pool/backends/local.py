"""A replica whose engine runs in this process: health and load are read, not probed."""

from __future__ import annotations

import asyncio

from sovllm.engines.base import EngineStats, GenerationRequest, RequestStream
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.pool.backends.base import Probe, ReplicaFailure


class LocalBackend:
    """The embedded engine inside the gateway process (a pool of one, the default)."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.engine = engine

    async def start(self) -> None:
        await asyncio.to_thread(self.engine.start)

    def live_stats(self) -> EngineStats | None:
        return self.engine.stats()

    def alive(self) -> bool | None:
        return self.engine.healthy

    async def open(self, request: GenerationRequest, prompt_tokens: int) -> RequestStream:
        return self.engine.submit(request)

    async def probe(self) -> Probe:
        if not self.engine.healthy:
            raise ReplicaFailure("the engine thread is not running")
        return Probe(self.engine.model, self.engine.stats())

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.shutdown)
