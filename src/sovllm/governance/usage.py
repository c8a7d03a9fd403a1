"""Usage accounting per key, tenant and day."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from sovllm.store.db import Database
from sovllm.store.schema import ApiKey, Tenant, UsageDaily


@dataclass(frozen=True)
class UsageRow:
    day: str
    tenant: str
    key_id: str
    key_prefix: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage(db: Database, tenant: str | None = None, since: dt.date | None = None) -> list[UsageRow]:
    q = (
        select(UsageDaily, Tenant.name, ApiKey.prefix)
        .join(Tenant, Tenant.id == UsageDaily.tenant_id)
        .join(ApiKey, ApiKey.id == UsageDaily.key_id)
    )
    if tenant is not None:
        q = q.where(Tenant.name == tenant)
    if since is not None:
        q = q.where(UsageDaily.day >= since.isoformat())
    with db.transaction() as s:
        rows = s.execute(q.order_by(UsageDaily.day, Tenant.name, UsageDaily.key_id)).all()
    return [
        UsageRow(u.day, t, u.key_id, prefix, u.requests, u.prompt_tokens, u.completion_tokens)
        for u, t, prefix in rows
    ]
