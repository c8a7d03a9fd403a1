"""Quotas that hold across gateway processes: decided inside one database transaction.

Per key and per tenant: requests per minute and tokens per minute (sliding 60-second windows
over admitted requests), concurrent requests, and a monthly token budget. Admission reserves
prompt + max_tokens; settlement replaces the reservation with what was used.

The check and the insert that follows it run under one lock, so concurrent admissions from any
number of processes see each other: SQLite's BEGIN IMMEDIATE (the file's write lock) or
PostgreSQL's row locks on the key and its tenant (always taken in that order).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sovllm.governance.identity import Limits, Principal
from sovllm.store.db import Database
from sovllm.store.schema import ApiKey, Inflight, RateEvent, Tenant, UsageDaily

WINDOW_S = 60.0
LEASE_S = 900.0
"""An in-flight row of a gateway that died is ignored after this long."""


@dataclass(frozen=True)
class RateLimitHeaders:
    """OpenAI's x-ratelimit-* values for the binding scope (the key's, else the tenant's)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float = 0.0

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.limit_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(max(self.remaining_requests or 0, 0))
            out["x-ratelimit-reset-requests"] = _duration(self.reset_requests_s)
        if self.limit_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(max(self.remaining_tokens or 0, 0))
            out["x-ratelimit-reset-tokens"] = _duration(self.reset_tokens_s)
        return out


def _duration(seconds: float) -> str:
    # OpenAI writes these as "1s", "6m0s", "120ms".
    if seconds < 1:
        return f"{max(round(seconds * 1000), 0)}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class QuotaExceeded(Exception):
    def __init__(
        self, message: str, code: str, retry_after_s: float, headers: RateLimitHeaders
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.headers = headers


@dataclass(frozen=True)
class Ticket:
    request_id: str
    key_id: str
    tenant_id: int
    reserved_tokens: int
    headers: RateLimitHeaders


def _month_start(now: float) -> dt.date:
    d = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return d.replace(day=1)


def _seconds_to_next_month(now: float) -> float:
    start = _month_start(now)
    nxt = (start + dt.timedelta(days=32)).replace(day=1)
    return dt.datetime(nxt.year, nxt.month, 1, tzinfo=dt.UTC).timestamp() - now


def _check_scope(
    s: Session,
    scope: str,
    limits: Limits,
    where_event: ColumnElement[bool],
    where_inflight: ColumnElement[bool],
    where_usage: ColumnElement[bool],
    reserved: int,
    now: float,
) -> RateLimitHeaders:
    since = now - WINDOW_S
    headers = RateLimitHeaders()
    if limits.rpm is not None or limits.tpm is not None:
        count, tokens, oldest = s.execute(
            select(
                func.count(), func.coalesce(func.sum(RateEvent.tokens), 0), func.min(RateEvent.at)
            ).where(where_event, RateEvent.at > since)
        ).one()
        reset = (oldest + WINDOW_S - now) if oldest is not None else 0.0
        headers = RateLimitHeaders(
            limit_requests=limits.rpm,
            remaining_requests=None if limits.rpm is None else limits.rpm - count - 1,
            reset_requests_s=reset,
            limit_tokens=limits.tpm,
            remaining_tokens=None if limits.tpm is None else limits.tpm - tokens - reserved,
            reset_tokens_s=reset,
        )
        if limits.rpm is not None and count >= limits.rpm:
            raise QuotaExceeded(
                f"Rate limit reached for {scope}: {limits.rpm} requests per minute. "
                f"Retry in {math.ceil(reset)} s.",
                "rate_limit_exceeded",
                reset,
                headers,
            )
        if limits.tpm is not None and reserved > limits.tpm:
            raise QuotaExceeded(
                f"Request too large for {scope}: it needs up to {reserved} tokens (prompt + "
                f"max_tokens) and the limit is {limits.tpm} tokens per minute. Lower max_tokens.",
                "request_too_large",
                WINDOW_S,
                headers,
            )
        if limits.tpm is not None and tokens + reserved > limits.tpm:
            raise QuotaExceeded(
                f"Rate limit reached for {scope}: {limits.tpm} tokens per minute; "
                f"{tokens} used or reserved, this request needs up to {reserved}. "
                f"Retry in {math.ceil(reset)} s.",
                "rate_limit_exceeded",
                reset,
                headers,
            )
    if limits.max_concurrent is not None:
        running = s.scalar(
            select(func.count())
            .select_from(Inflight)
            .where(where_inflight, Inflight.lease_until > now)
        )
        if (running or 0) >= limits.max_concurrent:
            raise QuotaExceeded(
                f"Too many concurrent requests for {scope}: the limit is "
                f"{limits.max_concurrent}. Retry when one finishes.",
                "concurrency_limit_exceeded",
                1.0,
                headers,
            )
    if limits.monthly_tokens is not None:
        month = _month_start(now).isoformat()
        used = s.scalar(
            select(
                func.coalesce(func.sum(UsageDaily.prompt_tokens + UsageDaily.completion_tokens), 0)
            ).where(where_usage, UsageDaily.day >= month)
        )
        held = s.scalar(
            select(func.coalesce(func.sum(Inflight.reserved_tokens), 0)).where(
                where_inflight, Inflight.lease_until > now
            )
        )
        if int(used or 0) + int(held or 0) + reserved > limits.monthly_tokens:
            raise QuotaExceeded(
                f"Monthly token budget of {scope} exhausted: {used} of "
                f"{limits.monthly_tokens} tokens used this month, this request needs up to "
                f"{reserved}.",
                "insufficient_quota",
                _seconds_to_next_month(now),
                headers,
            )
    return headers


def admit(
    db: Database, principal: Principal, request_id: str, reserved_tokens: int,
    now: float | None = None,
) -> Ticket:  # fmt: skip
    """Admit a request against its key's and tenant's limits, or raise QuotaExceeded."""
    now = time.time() if now is None else now
    p = principal
    with db.transaction() as s:
        if db.backend == "postgresql":
            s.execute(select(ApiKey.id).where(ApiKey.id == p.key_id).with_for_update())
            s.execute(select(Tenant.id).where(Tenant.id == p.tenant_id).with_for_update())
        key_headers = _check_scope(
            s, "this API key", p.key_limits,
            RateEvent.key_id == p.key_id, Inflight.key_id == p.key_id,
            UsageDaily.key_id == p.key_id, reserved_tokens, now,
        )  # fmt: skip
        tenant_headers = _check_scope(
            s, f"tenant {p.tenant}", p.tenant_limits,
            RateEvent.tenant_id == p.tenant_id, Inflight.tenant_id == p.tenant_id,
            UsageDaily.tenant_id == p.tenant_id, reserved_tokens, now,
        )  # fmt: skip
        since = now - WINDOW_S
        # Forget what no window can see any more, for this key only: cheap, and bounded.
        s.execute(delete(RateEvent).where(RateEvent.key_id == p.key_id, RateEvent.at <= since))
        s.execute(delete(Inflight).where(Inflight.key_id == p.key_id, Inflight.lease_until <= now))
        s.add(RateEvent(request_id=request_id, key_id=p.key_id, tenant_id=p.tenant_id,
                        at=now, tokens=reserved_tokens))  # fmt: skip
        s.add(Inflight(request_id=request_id, key_id=p.key_id, tenant_id=p.tenant_id,
                       started_at=now, lease_until=now + LEASE_S,
                       reserved_tokens=reserved_tokens))  # fmt: skip
    binding = (
        key_headers if key_headers.limit_requests or key_headers.limit_tokens else tenant_headers
    )
    return Ticket(request_id, p.key_id, p.tenant_id, reserved_tokens, binding)


def settle(
    db: Database, ticket: Ticket, prompt_tokens: int, completion_tokens: int,
    now: float | None = None,
) -> None:  # fmt: skip
    """Replace the reservation with actual usage and count it for the day."""
    now = time.time() if now is None else now
    day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
    with db.transaction() as s:
        s.execute(
            update(RateEvent)
            .where(RateEvent.request_id == ticket.request_id)
            .values(tokens=prompt_tokens + completion_tokens)
        )
        s.execute(delete(Inflight).where(Inflight.request_id == ticket.request_id))
        insert = pg_insert if db.backend == "postgresql" else sqlite_insert
        stmt = insert(UsageDaily).values(
            day=day, key_id=ticket.key_id, tenant_id=ticket.tenant_id, requests=1,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        )  # fmt: skip
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=[UsageDaily.day, UsageDaily.key_id],
                set_={
                    "requests": UsageDaily.requests + 1,
                    "prompt_tokens": UsageDaily.prompt_tokens + prompt_tokens,
                    "completion_tokens": UsageDaily.completion_tokens + completion_tokens,
                },
            )
        )


def release(db: Database, ticket: Ticket) -> None:
    """Undo an admission whose request never reached the engine (it is not counted)."""
    with db.transaction() as s:
        s.execute(delete(RateEvent).where(RateEvent.request_id == ticket.request_id))
        s.execute(delete(Inflight).where(Inflight.request_id == ticket.request_id))
