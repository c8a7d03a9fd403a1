"""What the request path shares, passed in through the app rather than reached for as globals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from sovllm.config import Settings
from sovllm.governance.access import AccessGuard
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.oversight import Oversight
from sovllm.governance.privacy.content import ContentVault
from sovllm.observability import tracing
from sovllm.observability.energy import EnergyMeter
from sovllm.observability.energy import disabled as no_energy
from sovllm.observability.metrics import Metrics
from sovllm.pool.router import Pool
from sovllm.store.db import Database

log = logging.getLogger("sovllm.gateway")


@dataclass(frozen=True)
class AppState:
    settings: Settings
    pool: Pool
    metrics: Metrics
    db: Database
    audit: AuditLog
    vault: ContentVault
    oversight: Oversight
    access: AccessGuard
    telemetry: tracing.Telemetry = field(default_factory=tracing.disabled)
    """Traces and GenAI metrics (observability/tracing.py): no-op unless export is on."""
    energy: EnergyMeter = field(default_factory=no_energy)
    """Each request's joules (observability/energy/): records nothing unless a counter reads."""
    background: Background = field(default_factory=lambda: Background())


class Background:
    """Work a request leaves behind (settling a client that left, keeping content), which must
    finish before the service stops: `drain()` at shutdown waits for it, up to a deadline."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, work: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work for a request failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float = 30.0) -> int:
        """Wait for the work under way; return how many tasks were still running at the
        deadline (each is logged: its request's usage or content may be missing)."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            log.error("background work still running at shutdown after %.0f s: %s", timeout_s, task)
            task.cancel()
        return len(pending)
