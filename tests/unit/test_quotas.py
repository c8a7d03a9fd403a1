"""Quotas hold exactly under concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from sovllm.governance import identity as idn
from sovllm.governance import quotas
from sovllm.governance.usage import usage
from sovllm.store.db import Database


def principal(
    db: Database, key: idn.Limits = idn.Limits(), tenant: idn.Limits = idn.Limits()
) -> idn.Principal:
    name = f"t{uuid.uuid4().hex[:8]}"
    idn.create_tenant(db, name, tenant)
    raw, _ = idn.create_key(db, name, idn.Role.USER, key)
    return idn.authenticate(db, raw)


def try_admit(
    db: Database, p: idn.Principal, tokens: int, now: float | None = None
) -> quotas.Ticket | None:
    try:
        return quotas.admit(db, p, uuid.uuid4().hex, tokens, now=now)
    except quotas.QuotaExceeded:
        return None


def admitted_concurrently(db: Database, p: idn.Principal, n: int, tokens: int) -> int:
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: try_admit(db, p, tokens), range(n)))
    return sum(r is not None for r in results)


def test_requests_per_minute_hold_exactly_under_concurrency(db: Database) -> None:
    p = principal(db, key=idn.Limits(rpm=20))
    assert admitted_concurrently(db, p, 120, tokens=10) == 20


def test_tokens_per_minute_hold_exactly_under_concurrency(db: Database) -> None:
    p = principal(db, tenant=idn.Limits(tpm=1000))
    assert admitted_concurrently(db, p, 100, tokens=100) == 10


def test_concurrency_limit_frees_on_settlement(db: Database) -> None:
    p = principal(db, key=idn.Limits(max_concurrent=3))
    tickets = [try_admit(db, p, 5) for _ in range(5)]
    held = [t for t in tickets if t is not None]
    assert len(held) == 3
    quotas.settle(db, held[0], 2, 3)
    assert try_admit(db, p, 5) is not None
    assert try_admit(db, p, 5) is None


def test_the_window_slides(db: Database) -> None:
    p = principal(db, key=idn.Limits(rpm=2))
    t0 = 1_000_000.0
    assert try_admit(db, p, 1, now=t0) and try_admit(db, p, 1, now=t0 + 30)
    with pytest.raises(quotas.QuotaExceeded) as err:
        quotas.admit(db, p, "x", 1, now=t0 + 59)
    assert err.value.retry_after_s == 1
    assert err.value.headers.as_dict()["x-ratelimit-remaining-requests"] == "0"
    assert try_admit(db, p, 1, now=t0 + 60.5) is not None


def test_settlement_replaces_the_reservation(db: Database) -> None:
    p = principal(db, key=idn.Limits(tpm=1000))
    ticket = quotas.admit(db, p, "a", 900)
    assert try_admit(db, p, 200) is None  # 900 reserved
    quotas.settle(db, ticket, 50, 50)  # only 100 used
    assert try_admit(db, p, 800) is not None


def test_a_request_larger_than_the_limit_says_so(db: Database) -> None:
    p = principal(db, key=idn.Limits(tpm=100))
    with pytest.raises(quotas.QuotaExceeded) as err:
        quotas.admit(db, p, "big", 500)
    assert err.value.code == "request_too_large"
    assert "500" in str(err.value) and "100" in str(err.value)


def test_monthly_budget_counts_settled_and_reserved_tokens(db: Database) -> None:
    p = principal(db, tenant=idn.Limits(monthly_tokens=1000))
    first = quotas.admit(db, p, "m1", 400)
    quotas.settle(db, first, 100, 500)  # 600 used
    held = quotas.admit(db, p, "m2", 300)  # 900 with this reservation
    with pytest.raises(quotas.QuotaExceeded) as err:
        quotas.admit(db, p, "m3", 200)
    assert err.value.code == "insufficient_quota"
    quotas.release(db, held)
    assert try_admit(db, p, 200) is not None


def test_usage_is_counted_per_key_and_day(db: Database) -> None:
    p = principal(db)
    for i in range(3):
        quotas.settle(db, quotas.admit(db, p, f"u{i}", 10), 7, 5)
    rows = usage(db, tenant=p.tenant)
    assert len(rows) == 1
    row = rows[0]
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (3, 21, 15)
    assert row.day == dt.datetime.now(dt.UTC).date().isoformat()
    assert usage(db, tenant=p.tenant, since=dt.date.today() + dt.timedelta(days=2)) == []


def test_headers_follow_openai_names(db: Database) -> None:
    p = principal(db, key=idn.Limits(rpm=5, tpm=1000))
    ticket = quotas.admit(db, p, "h", 100)
    h = ticket.headers.as_dict()
    assert h["x-ratelimit-limit-requests"] == "5"
    assert h["x-ratelimit-remaining-requests"] == "4"
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert h["x-ratelimit-remaining-tokens"] == "900"
    assert h["x-ratelimit-reset-requests"].endswith("s")
