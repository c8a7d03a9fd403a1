"""Quotas hold exactly under concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.governance import identity as idn
from sovllm.governance import quotas, tenants
from sovllm.governance.usage import usage
from sovllm.store import migrate
from sovllm.store.db import Database
from tests.conftest import fresh_database_url, wait_until


def principal(
    db: Database, key: idn.Limits = idn.Limits(), tenant: idn.Limits = idn.Limits()
) -> idn.Principal:
    name = f"t{uuid.uuid4().hex[:8]}"
    tenants.create_tenant(db, name, tenant)
    raw, _ = tenants.create_key(db, name, idn.Role.USER, key)
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
    # Whole-second buckets: the request of second t0 leaves the window at t0 + 61.
    assert err.value.retry_after_s == 2
    assert err.value.headers.as_dict()["x-ratelimit-remaining-requests"] == "0"
    assert try_admit(db, p, 1, now=t0 + 60.5) is None
    assert try_admit(db, p, 1, now=t0 + 61) is not None


def test_no_sixty_second_span_admits_more_than_the_limit(db: Database) -> None:
    # Attempts every 0.25 s for 150 s against 5 requests per minute: wherever the buckets'
    # second boundaries fall, no 60-second span holds more than 5 admissions, and the window
    # frees a slot within a second of an exact one.
    p = principal(db, key=idn.Limits(rpm=5))
    t0 = 3_000_000.6
    admitted = [t0 + i / 4 for i in range(600) if try_admit(db, p, 1, now=t0 + i / 4) is not None]
    for a in admitted:
        assert sum(1 for b in admitted if a - 60 < b <= a) <= 5
    assert len(admitted) >= 10  # three windows' worth, less the rounding
    gaps = [b - a for a, b in zip(admitted, admitted[5:], strict=False)]
    assert all(60 <= g <= 61.25 for g in gaps)


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
    # A refusal counts nothing: what is left is what it was, without the refused request.
    with pytest.raises(quotas.QuotaExceeded) as err:
        quotas.admit(db, p, "too-big", 950)
    refused = err.value.headers.as_dict()
    assert refused["x-ratelimit-remaining-tokens"] == "900"
    assert refused["x-ratelimit-remaining-requests"] == "4"


def test_upgrading_carries_the_open_windows_into_buckets(database_url_any: str) -> None:
    # A database of the one-row-per-request schema (0004), with requests in an open window.
    old = Database(database_url_any)
    try:
        migrate.upgrade(old, "0004")
        name = f"t{uuid.uuid4().hex[:8]}"
        minted = tenants.mint_key()
        now = float(int(time.time()))
        with old.engine.begin() as conn:
            # The tenant and key as the 0004 schema has them (today's models have more columns).
            conn.execute(
                text(
                    "INSERT INTO tenants (name, created_at, weight, rpm, content_policy, "
                    "mask_prompts) VALUES (:name, :now, 1.0, 3, 'none', :mask)"
                ),
                {"name": name, "now": now, "mask": False},
            )
            tenant_id = conn.execute(
                text("SELECT id FROM tenants WHERE name = :name"), {"name": name}
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, tenant_id, role, key_hash, prefix, created_at, tpm) "
                    "VALUES (:id, :tenant, 'user', :hash, :prefix, :now, 1000)"
                ),
                {
                    "id": minted.id,
                    "tenant": tenant_id,
                    "hash": idn.hash_key(minted.raw),
                    "prefix": minted.prefix,
                    "now": now,
                },
            )
            for i, (at, tokens) in enumerate(
                [(now - 10.25, 300), (now - 10.75, 200), (now - 5, 100)]
            ):
                conn.execute(
                    text(
                        "INSERT INTO rate_events (request_id, key_id, tenant_id, at, tokens) "
                        "VALUES (:rid, :key, :tenant, :at, :tokens)"
                    ),
                    {
                        "rid": f"r{i}",
                        "key": minted.id,
                        "tenant": tenant_id,
                        "at": at,
                        "tokens": tokens,
                    },
                )
        migrate.upgrade(old)
        p = idn.authenticate(old, minted.raw)
        with old.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT scope, second, requests, tokens FROM rate_buckets ORDER BY scope, second"
                )
            ).all()
        key, tenant = f"k:{p.key_id}", f"t:{p.tenant_id}"
        s = int(now)
        assert [tuple(r) for r in rows if r[0] == key] == [
            (key, s - 11, 2, 500),
            (key, s - 5, 1, 100),
        ]
        assert [tuple(r) for r in rows if r[0] == tenant] == [
            (tenant, s - 11, 2, 500),
            (tenant, s - 5, 1, 100),
        ]
        # The three carried-over requests still count: the tenant's RPM of 3 is reached.
        with pytest.raises(quotas.QuotaExceeded) as err:
            quotas.admit(old, p, "after-upgrade", 1, now=now)
        assert err.value.code == "rate_limit_exceeded"
        assert err.value.retry_after_s == 50  # the second now - 11 leaves at now + 50
    finally:
        old.dispose()


def test_a_busy_key_window_reads_one_row_per_second(db: Database) -> None:
    # 300 requests inside one second are one bucket per scope, and the window still counts them.
    p = principal(db, key=idn.Limits(rpm=1000, tpm=10**6))
    t0 = 2_000_000.0
    for i in range(300):
        quotas.settle(db, quotas.admit(db, p, f"b{i}", 50, now=t0 + i / 1000), 10, 5, now=t0)
    ticket = quotas.admit(db, p, "next", 50, now=t0 + 0.5)
    assert ticket.headers.remaining_requests == 1000 - 300 - 1
    assert ticket.headers.remaining_tokens == 10**6 - 300 * 15 - 50
    quotas.release(db, ticket)
    with db.engine.connect() as conn:
        scope = f"k:{p.key_id}"
        rows = conn.execute(
            text("SELECT requests, tokens FROM rate_buckets WHERE scope = :s"), {"s": scope}
        ).all()
    assert [tuple(r) for r in rows] == [(300, 300 * 15)]


def _buckets(db: Database, scope: str) -> list[tuple[int, int]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT requests, tokens FROM rate_buckets WHERE scope = :s ORDER BY second"),
            {"s": scope},
        ).all()
    return [(int(r[0]), int(r[1])) for r in rows]


def test_settlement_and_release_correct_the_tenant_window_too(db: Database) -> None:
    # Two keys of one tenant share its window: what one key settles or releases frees the other.
    p1 = principal(db, tenant=idn.Limits(rpm=2, tpm=1000))
    raw, _ = tenants.create_key(db, p1.tenant, idn.Role.USER)
    p2 = idn.authenticate(db, raw)
    t0 = 4_000_000.0
    first = quotas.admit(db, p1, "first", 900, now=t0)
    assert try_admit(db, p2, 200, now=t0 + 1) is None  # 900 of 1,000 reserved
    quotas.settle(db, first, 60, 40, now=t0 + 1)  # 100 used
    second = quotas.admit(db, p2, "second", 800, now=t0 + 2)
    assert try_admit(db, p2, 1, now=t0 + 3) is None  # two requests: the tenant's RPM
    quotas.release(db, second)
    assert try_admit(db, p2, 1, now=t0 + 3) is not None
    assert _buckets(db, f"t:{p1.tenant_id}") == [(1, 100), (0, 0), (1, 1)]


def test_settling_or_releasing_twice_counts_once(db: Database) -> None:
    p = principal(db, key=idn.Limits(rpm=2, tpm=1000))
    t0 = 5_000_000.0
    ticket = quotas.admit(db, p, "once", 400, now=t0)
    quotas.settle(db, ticket, 100, 100, now=t0)
    quotas.settle(db, ticket, 100, 100, now=t0)
    quotas.release(db, ticket)
    assert _buckets(db, f"k:{p.key_id}") == [(1, 200)]
    held = quotas.admit(db, p, "held", 400, now=t0 + 1)
    quotas.release(db, held)
    quotas.release(db, held)
    assert _buckets(db, f"k:{p.key_id}") == [(1, 200), (0, 0)]
    assert usage(db, tenant=p.tenant)[0].requests == 2  # usage records each settlement call


def test_settlement_locks_buckets_in_the_order_admission_does(
    postgres_url: str, tmp_path: Path
) -> None:
    # PostgreSQL locks an UPDATE's rows in the order its plan reads them. With the tenant's
    # bucket stored before the key's and a sequential scan forced, an unordered settlement
    # would lock the tenant's row and then wait for the key's, which a concurrent admission
    # holds while it waits for the tenant's: a deadlock. Settlement must wait for the key's
    # row first, holding nothing.
    db = Database(fresh_database_url("postgresql", tmp_path, postgres_url))
    try:
        migrate.upgrade(db)
        p = principal(db)
        t0 = 6_000_000.0
        ticket = quotas.admit(db, p, "r", 100, now=t0)
        kscope, tscope = ticket.scopes
        with db.engine.begin() as conn:
            # A new row version goes to the end of the table: the key's now comes after.
            conn.execute(
                text("UPDATE rate_buckets SET tokens = tokens WHERE scope = :k"), {"k": kscope}
            )
            name = conn.execute(text("SELECT current_database()")).scalar_one()
            for knob in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
                conn.execute(text(f'ALTER DATABASE "{name}" SET {knob} = off'))
        db.engine.dispose()  # new connections take the settings
        hold = db.engine.raw_connection()  # an admission in progress: holds the key's row
        cur = hold.cursor()
        cur.execute("SET lock_timeout = '20s'")
        cur.execute(
            "UPDATE rate_buckets SET requests = requests WHERE scope = %s AND second = %s",
            (kscope, int(t0)),
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            settling = pool.submit(quotas.settle, db, ticket, 30, 20, t0)
            with db.engine.connect() as watch:
                waiting = text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                wait_until(lambda: watch.execute(waiting).scalar_one() == 1, "settlement to wait")
            # The admission goes on to the tenant's row: free, unless settlement took it.
            cur.execute(
                "UPDATE rate_buckets SET requests = requests WHERE scope = %s AND second = %s",
                (tscope, int(t0)),
            )
            hold.commit()
            settling.result(timeout=30)
        hold.close()
        assert _buckets(db, kscope) == [(1, 50)] and _buckets(db, tscope) == [(1, 50)]
    finally:
        db.dispose()
