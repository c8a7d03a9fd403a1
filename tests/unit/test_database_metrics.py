"""The database and WAL gauges on SQLite and PostgreSQL, and the process series beside them."""

from __future__ import annotations

import secrets

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text

from sovllm.observability import database_metrics
from sovllm.store.db import Database


def _values(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_database_and_wal_bytes_grow_with_writes(db: Database) -> None:
    registry = CollectorRegistry()
    database_metrics.register(registry, db)
    before = _values(registry)
    assert before["sovllm:database_size_bytes"] > 0
    assert before["sovllm:database_wal_bytes"] >= 0
    assert before["process_resident_memory_bytes"] > 10e6
    assert before["process_open_fds"] >= 3
    with db.transaction() as s:
        s.execute(text("CREATE TABLE ballast (b TEXT)"))
        # Random text: PostgreSQL would compress a repeated one to almost nothing.
        rows = [{"b": secrets.token_hex(2000)} for _ in range(500)]
        s.execute(text("INSERT INTO ballast VALUES (:b)"), rows)
    after = _values(registry)
    grown = (
        after["sovllm:database_size_bytes"]
        + after["sovllm:database_wal_bytes"]
        - before["sovllm:database_size_bytes"]
        - before["sovllm:database_wal_bytes"]
    )
    # 2 MB written lands in the database file or its log (PostgreSQL: the table; its WAL is in fixed-size segments).
    assert grown >= 1_000_000, (before, after)
