"""Does admission get slower as a key's requests fill its RPM/TPM window?

For each backend (a SQLite file, and a private PostgreSQL server like the tests'), times the
request path's single database trip (`quotas.authorize_and_admit`: key, role and every quota in
one transaction) with the key's and tenant's 60-second windows empty, then with `--fill`
requests admitted and settled over the last 59 seconds (a key at `--fill`/60 requests/s), and
prints the p50s and their ratio. The empty window is the baseline of the same run. Then it times
one scope's window query both ways on the same database: the one-row-per-request design it
replaced (a copy of its table and covering index, holding `--fill` rows) against the buckets.

With one row per request (up to session 3) the cost grew by 0.2-0.3 ms per 1,000 requests in
the window; with per-second buckets a window is at most 61 rows per scope, so the ratio should
stay near 1 whatever `--fill` is.

    .venv/bin/python benchmarks/quota_window.py [--fill 6000] [--calls 400]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from tests.postgres import create_database, private_postgres

from sovllm.governance import identity as idn
from sovllm.governance import quotas, tenants
from sovllm.store.db import Database
from sovllm.store.migrate import upgrade
from sovllm.store.raw import SQL, raw_transaction

ROLES = frozenset({idn.Role.USER})


def _p50_ms(db: Database, raw: str, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        _, ticket = quotas.authorize_and_admit(db, raw, ROLES, uuid.uuid4().hex, 100)
        times.append(time.perf_counter() - start)
        quotas.release(db, ticket)  # keeps the window as it was
    return statistics.median(times) * 1000


# The window query of the one-row-per-request design (sessions 1-2), on a copy of its table
# with its covering index: the baseline the buckets replace, timed in the same run.
_LEGACY_TABLE = (
    "CREATE TABLE legacy_rate_events (request_id VARCHAR(64) PRIMARY KEY, key_id VARCHAR(32), "
    "at FLOAT, tokens BIGINT)",
    "CREATE INDEX ix_legacy_key_at ON legacy_rate_events (key_id, at, tokens)",
)
_LEGACY_WINDOW = SQL(
    "SELECT count(*), coalesce(sum(tokens), 0), (SELECT at FROM legacy_rate_events WHERE "
    "key_id = :id AND at > :since ORDER BY at LIMIT 1) FROM legacy_rate_events "
    "WHERE key_id = :id AND at > :since"
)


def _query_p50_ms(db: Database, stmt: SQL, params: dict[str, object], calls: int) -> float:
    times = []
    for _ in range(calls):
        with raw_transaction(db) as s:
            start = time.perf_counter()
            s.one(stmt, params)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def window_queries(db: Database, key_id: str, fill: int, calls: int) -> tuple[float, float]:
    """p50 of one scope's window query: the old design's over `fill` rows, the buckets'."""
    now = time.time()
    with db.engine.begin() as conn:
        for ddl in _LEGACY_TABLE:
            conn.execute(text(ddl))
        conn.execute(
            text("INSERT INTO legacy_rate_events VALUES (:rid, :key, :at, 100)"),
            [
                {"rid": uuid.uuid4().hex, "key": key_id, "at": now - 59 + 59 * i / fill}
                for i in range(fill)
            ],
        )
    legacy = _query_p50_ms(db, _LEGACY_WINDOW, {"id": key_id, "since": now - 60}, calls)
    params = {"scope": f"k:{key_id}", "since": quotas._window_floor(now)}
    buckets = _query_p50_ms(db, quotas._WINDOW, params, calls)
    return legacy, buckets


def run(url: str, fill: int, calls: int) -> tuple[float, float, float, float]:
    db = Database(url)
    upgrade(db)
    name = f"bench{uuid.uuid4().hex[:6]}"
    limits = idn.Limits(rpm=10**9, tpm=10**12, max_concurrent=10**6, monthly_tokens=10**15)
    tenants.create_tenant(db, name, limits)
    raw, _ = tenants.create_key(db, name, idn.Role.USER, limits)
    p = idn.authenticate(db, raw)
    _p50_ms(db, raw, 50)  # warm-up
    empty = _p50_ms(db, raw, calls)
    now = time.time()
    for i in range(fill):
        at = now - 59 + 59 * i / fill
        ticket = quotas.admit(db, p, uuid.uuid4().hex, 100, now=at)
        quotas.settle(db, ticket, 60, 40, now=at)
    full = _p50_ms(db, raw, calls)
    legacy, buckets = window_queries(db, p.key_id, fill, calls)
    db.dispose()
    return empty, full, legacy, buckets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fill", type=int, default=6000, help="requests in the window")
    ap.add_argument("--calls", type=int, default=400, help="timed admissions per measurement")
    args = ap.parse_args()
    rows = []
    with TemporaryDirectory() as tmp:
        rows.append(("sqlite", *run(f"sqlite:///{tmp}/q.db", args.fill, args.calls)))
    with private_postgres() as server:
        rows.append(("postgresql", *run(create_database(server), args.fill, args.calls)))
    print(f"admission p50 (authorize_and_admit), window empty vs holding {args.fill} requests")
    for backend, empty, full, _, _ in rows:
        print(
            f"{backend:11s} empty {empty:6.3f} ms  full {full:6.3f} ms  ratio {full / empty:4.2f}x"
        )
    print(f"one scope's window query p50 at {args.fill} requests: a row per request vs buckets")
    for backend, _, _, legacy, buckets in rows:
        print(
            f"{backend:11s} rows {legacy:6.3f} ms  buckets {buckets:6.3f} ms  {legacy / buckets:5.1f}x"
        )


if __name__ == "__main__":
    main()
