"""What the routes share, passed in through the app rather than reached for as globals."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from sovllm.config import Settings
from sovllm.governance.access import AccessGuard
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.oversight import Oversight
from sovllm.governance.privacy.content import ContentVault
from sovllm.observability.metrics import Metrics
from sovllm.pool.router import Pool
from sovllm.store.db import Database


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


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.sovllm
    return state
