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

    `since` keeps a rolled-up month only if the whole month is on or after it: a month's days
    are no longer told apart, and counting a month that began before `since` would report usage
    from before it. The rolled-up days are all older than `retention.usage_days` (at least 31),
    so only a report reaching back past retention can miss part of a month.
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
        first_whole = since if since.day == 1 else (since.replace(day=28) + dt.timedelta(days=4))
        months = months.where(UsageMonthly.month >= first_whole.isoformat()[:7])
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
