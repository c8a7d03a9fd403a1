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
    energy_joules: float = 0.0
    energy_co2e_g: float = 0.0
    energy_source: str = ""
    """measured:rapl|nvml|dcgm, estimated, mixed, or empty (no energy; a rolled-up month)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class EnergyRow:
    """A tenant's energy on one day (or one rolled-up month)."""

    day: str
    tenant: str
    requests: int
    joules: float
    co2e_g: float
    source: str

    @property
    def kwh(self) -> float:
        return self.joules / 3.6e6


def energy_by_tenant_day(rows: list[UsageRow]) -> list[EnergyRow]:
    """Sum the keys' rows per tenant and day; the source is `mixed` where they differ."""
    out: dict[tuple[str, str], EnergyRow] = {}
    for r in rows:
        seen = out.get((r.day, r.tenant))
        if seen is None:
            out[(r.day, r.tenant)] = EnergyRow(
                r.day, r.tenant, r.requests, r.energy_joules, r.energy_co2e_g, r.energy_source
            )
            continue
        sources = {seen.source, r.energy_source} - {""}
        source = sources.pop() if len(sources) == 1 else ("mixed" if sources else "")
        out[(r.day, r.tenant)] = EnergyRow(
            r.day,
            r.tenant,
            seen.requests + r.requests,
            seen.joules + r.energy_joules,
            seen.co2e_g + r.energy_co2e_g,
            source,
        )
    return sorted(out.values(), key=lambda e: (e.day, e.tenant))


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
        UsageRow(
            u.day,
            t,
            u.key_id,
            prefix,
            u.requests,
            u.prompt_tokens,
            u.completion_tokens,
            u.energy_joules,
            u.energy_co2e_g,
            u.energy_source,
        )
        for u, t, prefix in days
    ] + [
        UsageRow(
            m.month,
            t,
            "",
            "",
            m.requests,
            m.prompt_tokens,
            m.completion_tokens,
            m.energy_joules,
            m.energy_co2e_g,
        )
        for m, t in rolled
    ]
    # "2025-01" sorts before "2025-01-01": a month's rolled-up part comes before its later days.
    return sorted(out, key=lambda r: (r.day, r.tenant, r.key_id))
