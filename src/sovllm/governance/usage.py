"""Usage accounting per key, tenant and day; past `retention.usage_days`, per tenant and month
(governance/retention.py rolls the days up)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from sovllm.store.db import Database
from sovllm.store.schema import ApiKey, Tenant, UsageDaily, UsageMonthly


@dataclass(frozen=True)
class UsageRow:
    day: str
    """YYYY-MM-DD; or YYYY-MM for a month rolled up past retention, per tenant (no key)."""
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
    """Days, and the months rolled up past retention (key_id and key_prefix empty), by date.

    `since` keeps a rolled-up month if any of its days is on or after it.
    """
    q = (
        select(UsageDaily, Tenant.name, ApiKey.prefix)
        .join(Tenant, Tenant.id == UsageDaily.tenant_id)
        .join(ApiKey, ApiKey.id == UsageDaily.key_id)
    )
    months = select(UsageMonthly, Tenant.name).join(Tenant, Tenant.id == UsageMonthly.tenant_id)
    if tenant is not None:
        q = q.where(Tenant.name == tenant)
        months = months.where(Tenant.name == tenant)
    if since is not None:
        q = q.where(UsageDaily.day >= since.isoformat())
        months = months.where(UsageMonthly.month >= since.isoformat()[:7])
    with db.transaction() as s:
        days = s.execute(q).all()
        rolled = s.execute(months).all()
    out = [
        UsageRow(u.day, t, u.key_id, prefix, u.requests, u.prompt_tokens, u.completion_tokens)
        for u, t, prefix in days
    ] + [
        UsageRow(m.month, t, "", "", m.requests, m.prompt_tokens, m.completion_tokens)
        for m, t in rolled
    ]
    # "2025-01" sorts before "2025-01-01": a month's rolled-up part comes before its later days.
    return sorted(out, key=lambda r: (r.day, r.tenant, r.key_id))
