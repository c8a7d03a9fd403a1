"""A dead gateway's quota reservations are released, and only a dead one's (SQLite, PostgreSQL).

Real processes stand for the gateways that own the rows: a child that has exited is a gateway
killed on this host; this test process itself is a living one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from sovllm.governance import identity as idn
from sovllm.governance import instances, quotas, tenants
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_database
from sovllm.store.db import Database


@pytest.fixture
def log(db: Database, tmp_path: Path) -> Iterator[AuditLog]:
    signer = Signer.load_or_create(tmp_path / "signing.key", "test-log")
    audit = AuditLog(db, signer, "test-log")
    yield audit
    audit.close()


def principal(db: Database) -> idn.Principal:
    name = f"t{uuid.uuid4().hex[:8]}"
    tenants.create_tenant(db, name, idn.Limits())
    raw, _ = tenants.create_key(db, name, idn.Role.USER, idn.Limits(max_concurrent=10))
    return idn.authenticate(db, raw)


def dead_pid() -> tuple[int, int]:
    """The pid and start time of a process that ran and has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    start = instances.start_ticks(child.pid)
    assert start is not None
    child.communicate(b"")
    return child.pid, start


def add_instance(db: Database, ident: str, host: str, pid: int, start: int, age: float) -> None:
    with db.transaction() as s:
        s.execute(
            text(
                "INSERT INTO gateway_instances (id, host, hostname, pid, proc_start, started_at, "
                "heartbeat_at) VALUES (:id, :host, 'elsewhere', :pid, :start, 0, :beat)"
            ),
            {"id": ident, "host": host, "pid": pid, "start": start, "beat": _db_now(db) - age},
        )


def _db_now(db: Database) -> float:
    with db.read() as s:
        sql = instances._PG_NOW if db.backend == "postgresql" else instances._NOW
        return float(s.execute(text(f"SELECT {sql}")).scalar_one())


def admit_as(db: Database, p: idn.Principal, owner: str, n: int) -> list[quotas.Ticket]:
    tickets = [quotas.admit(db, p, uuid.uuid4().hex, 100) for _ in range(n)]
    with db.transaction() as s:
        for t in tickets:
            s.execute(
                text("UPDATE inflight SET owner = :o WHERE request_id = :r"),
                {"o": owner, "r": t.request_id},
            )
    return tickets


def inflight(db: Database, owner: str) -> int:
    with db.read() as s:
        q = text("SELECT count(*) FROM inflight WHERE owner = :o")
        return int(s.execute(q, {"o": owner}).scalar_one())


def released_entries(db: Database) -> list[dict[str, Any]]:
    with db.read() as s:
        q = text("SELECT body FROM audit_entries WHERE kind = :k ORDER BY seq")
        return [json.loads(b) for b in s.execute(q, {"k": instances.RELEASED}).scalars()]


def used(db: Database, p: idn.Principal) -> int:
    with db.read() as s:
        q = text(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_daily "
            "WHERE key_id = :k"
        )
        return int(s.execute(q, {"k": p.key_id}).scalar_one())


def test_a_dead_gateway_on_this_host_is_released_and_its_ended_request_settled(
    db: Database, log: AuditLog
) -> None:
    p = principal(db)
    pid, start = dead_pid()
    add_instance(db, "dead", instances.me().host, pid, start, age=0)
    cut, ended = admit_as(db, p, "dead", 2)
    # It died after this request's end was durable and before it settled.
    log.append(records.END, {"tokens": {"prompt": 7, "completion": 5}}, ended.request_id)
    assert instances.start(db, log)[0].reason == "process_gone"
    assert inflight(db, "dead") == 0
    assert used(db, p) == 12  # the ended request, from its entry; the cut one counts nothing
    (entry,) = released_entries(db)
    assert entry["reason"] == "process_gone" and entry["instance"]["pid"] == pid
    assert entry["released"] == [cut.request_id] and entry["settled"] == [ended.request_id]
    assert entry["actor"]["instance"] == quotas.INSTANCE_ID
    # The key's concurrency slots are free again; the instance is gone; the log verifies.
    with db.read() as s:
        ids = s.execute(text("SELECT id FROM gateway_instances")).scalars().all()
    assert ids == [quotas.INSTANCE_ID]
    assert instances.release_dead(db, log) == []
    report = verify_database(db, log.signer.verifier)
    assert report.ok, report.problems


def test_a_living_gateway_keeps_its_rows_even_with_an_old_pid_reused(
    db: Database, log: AuditLog
) -> None:
    p = principal(db)
    here = instances.me().host
    mine = instances.start_ticks(os.getpid())
    assert mine is not None
    add_instance(db, "alive", here, os.getpid(), mine, age=0)  # this process: alive
    add_instance(db, "reused", here, os.getpid(), mine - 1, age=0)  # its pid, another start
    admit_as(db, p, "alive", 1)
    admit_as(db, p, "reused", 1)
    done = instances.release_dead(db, log)
    assert [(r.instance, r.reason) for r in done] == [("reused", "process_gone")]
    assert inflight(db, "alive") == 1 and inflight(db, "reused") == 0


def test_another_hosts_gateway_is_released_only_after_its_heartbeat_stops(
    db: Database, log: AuditLog
) -> None:
    p = principal(db)
    add_instance(db, "fresh", "other-host/pid:[1]", 1, 1, age=5)
    add_instance(db, "silent", "other-host/pid:[1]", 2, 1, age=instances.STALE_S + 5)
    admit_as(db, p, "fresh", 1)
    (ended,) = admit_as(db, p, "silent", 1)
    log.append(records.END, {"tokens": {"prompt": 7, "completion": 5}}, ended.request_id)
    done = instances.release_dead(db, log)
    assert [(r.instance, r.reason) for r in done] == [("silent", "heartbeat_stale")]
    assert inflight(db, "fresh") == 1 and inflight(db, "silent") == 0
    # Its owner may be alive and settle it itself: a stale instance's rows are never settled.
    assert released_entries(db)[0]["released"] == [ended.request_id]
    assert used(db, p) == 0


def test_a_gateway_taken_for_dead_registers_again_at_its_heartbeat(
    db: Database, log: AuditLog
) -> None:
    instances.register(db)
    instances.register(db)  # a second app in the same process: one row
    instances.deregister(db)
    instances.heartbeat(db)
    with db.read() as s:
        ids = s.execute(text("SELECT id FROM gateway_instances")).scalars().all()
    assert ids == [quotas.INSTANCE_ID]


def test_admission_records_this_process_as_the_owner(db: Database) -> None:
    ticket = quotas.admit(db, principal(db), uuid.uuid4().hex, 10)
    with db.read() as s:
        q = text("SELECT owner FROM inflight WHERE request_id = :r")
        assert s.execute(q, {"r": ticket.request_id}).scalar_one() == quotas.INSTANCE_ID


def test_migration_0012_downgrades_and_upgrades(db: Database) -> None:
    from alembic import command

    from sovllm.store import migrate

    command.downgrade(migrate._config(db), "0011")
    with db.read() as s, pytest.raises(Exception, match="gateway_instances"):
        s.execute(text("SELECT 1 FROM gateway_instances"))
    migrate.upgrade(db)
    with db.read() as s:
        assert s.execute(text("SELECT count(owner) FROM inflight")).scalar() == 0
