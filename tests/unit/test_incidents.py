"""Incidents on a real database (SQLite and PostgreSQL): the deadline per class (AI Act Art. 73),
the records each change writes, the states it refuses, the metric, and the 0010 migration."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import inspect

from sovllm.governance import incident_report, incidents
from sovllm.governance.audit import lookup, records
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_database
from sovllm.observability.clock import (
    STA_NANO,
    STA_UNSYNC,
    TIME_ERROR,
    ClockWatch,
    interpret,
    read_clock,
)
from sovllm.observability.incident_metrics import IncidentCollector
from sovllm.store import migrate
from sovllm.store.db import Database
from tests.conftest import wait_until_async

AWARE = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC).timestamp()
ACTOR = {"cli": "tester", "host": "here"}


class Written(list[tuple[str, dict[str, Any]]]):
    """The entries a change wrote (the audit log's own writer is tested in tests/unit/audit)."""

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.append((kind, fields))


@pytest.mark.parametrize(
    ("severity", "days"),
    [
        ("serious", 15),  # Art. 73(2)
        ("death", 10),  # Art. 73(4)
        ("widespread", 2),  # Art. 73(3)
        ("critical-infrastructure", 2),  # Art. 73(3)
        ("data-breach", 3),  # GDPR Art. 33(1): 72 hours
    ],
)
def test_the_deadline_runs_from_awareness(severity: str, days: int) -> None:
    due = incidents.deadline(severity, AWARE)
    assert due is not None
    assert dt.datetime.fromtimestamp(due, dt.UTC) - dt.datetime.fromtimestamp(
        AWARE, dt.UTC
    ) == dt.timedelta(days=days)


def test_a_security_incident_has_no_deadline_and_a_bad_class_is_named() -> None:
    assert incidents.deadline("security", AWARE) is None
    with pytest.raises(incidents.IncidentError, match="no severity class 'fatal'; the classes"):
        incidents.deadline("fatal", AWARE)


def test_open_link_and_move_on_with_their_records(db: Database) -> None:
    written = Written()
    now = AWARE + 3600
    made = incidents.open_incident(db, written, ACTOR, "death", " A patient died ", AWARE, now)
    assert made.deadline_at == AWARE + 10 * incidents.DAY_S and made.summary == "A patient died"
    assert made.seconds_left(now) == 10 * incidents.DAY_S - 3600
    kind, fields = written[0]
    assert kind == records.INCIDENT_OPEN and fields["actor"] == ACTOR
    assert fields["report_deadline"] == "2026-03-11T09:30:00+00:00"
    assert fields["basis"] == "AI Act Art. 73(4)"

    # A request must be in the audit log to be linked; a range must lie within it.
    with pytest.raises(incidents.IncidentError, match="no audit entry for request"):
        incidents.link(db, written, ACTOR, made.id, request_id="chatcmpl-none")
    with pytest.raises(incidents.IncidentError, match="is not one"):
        incidents.link(db, written, ACTOR, made.id, audit_range=(0, 0))
    with pytest.raises(incidents.IncidentError, match="either"):
        incidents.link(db, written, ACTOR, made.id)
    assert len(written) == 1  # nothing refused was recorded

    moved = incidents.set_status(db, written, ACTOR, made.id, "reported", "sent")
    assert moved.status == "reported" and moved.reported_at is not None
    assert moved.seconds_left(now) is None and incidents.pending_reports(db) == []
    assert written[-1] == (
        records.INCIDENT_STATUS,
        {"actor": ACTOR, "incident": made.id, "from": "open", "to": "reported", "note": "sent"},
    )
    with pytest.raises(incidents.IncidentConflict, match="already reported"):
        incidents.set_status(db, written, ACTOR, made.id, "reported")
    with pytest.raises(incidents.IncidentError, match="no status 'open'"):
        incidents.set_status(db, written, ACTOR, made.id, "open")
    incidents.set_status(db, written, ACTOR, made.id, "closed", "done")
    with pytest.raises(incidents.IncidentConflict, match="is closed"):
        incidents.set_status(db, written, ACTOR, made.id, "investigating")
    with pytest.raises(incidents.IncidentNotFound):
        incidents.get(db, "inc-none")
    history = incidents.events(db, made.id)
    assert [(e.action, e.status, e.note) for e in history] == [
        ("open", "open", "A patient died"),
        ("status", "reported", "sent"),
        ("status", "closed", "done"),
    ]


def test_the_metric_has_a_series_per_pending_report(db: Database) -> None:
    written = Written()
    pending = incidents.open_incident(db, written, ACTOR, "widespread", "leak", AWARE, AWARE)
    incidents.open_incident(db, written, ACTOR, "security", "phish", AWARE, AWARE)
    done = incidents.open_incident(db, written, ACTOR, "serious", "wrong dose", AWARE, AWARE)
    incidents.set_status(db, written, ACTOR, done.id, "reported")
    registry = CollectorRegistry()
    registry.register(IncidentCollector(db, ttl_s=0))
    text = generate_latest(registry).decode()
    due = AWARE + 2 * incidents.DAY_S
    deadlines = [ln for ln in text.splitlines() if ln.startswith("sovllm:incident_report_dead")]
    assert len(deadlines) == 1, deadlines  # the security one has none, the reported one no more
    labels, value = deadlines[0].rsplit(" ", 1)
    assert labels.endswith(f'{{class="widespread",id="{pending.id}"}}') and float(value) == due
    assert 'sovllm:incidents_pending_report{class="widespread"} 1.0' in text
    assert 'sovllm:incidents_pending_report{class="serious"} 0.0' in text


def test_the_clock_state_is_read_from_the_kernel() -> None:
    assert interpret(0, 0, 1500, 2000).synchronized is True
    assert interpret(0, 0, 1500, 2000).offset_s == pytest.approx(0.0015)
    assert interpret(0, STA_NANO, 1500, 2000).offset_s == pytest.approx(1.5e-6)
    assert interpret(TIME_ERROR, 0, 0, 16_000_000).synchronized is False
    assert interpret(0, STA_UNSYNC, 0, 16_000_000).synchronized is False
    here = read_clock()
    assert here.source == "adjtimex" and here.synchronized is not None


def test_migration_0010_upgrades_and_downgrades(database_url_any: str) -> None:
    db = Database(database_url_any)
    try:
        migrate.upgrade(db, "0010")
        incidents.open_incident(db, Written(), ACTOR, "serious", "x", AWARE, AWARE)
        assert len(incidents.list_incidents(db)) == 1
        command.downgrade(migrate._config(db), "-1")
        tables = inspect(db.engine).get_table_names()
        assert "incidents" not in tables and "incident_events" not in tables
        migrate.upgrade(db)
        assert incidents.list_incidents(db) == []
    finally:
        db.dispose()


def test_the_clock_is_checked_again_after_each_interval(db: Database, tmp_path: Path) -> None:
    """The hourly check, at a tenth of a second: each check is a `clock.sync` entry."""
    log = AuditLog(db, Signer.load_or_create(tmp_path / "signing.key", "test-log"), "test-log")
    log.start()
    watch = ClockWatch(log)

    def hourly() -> int:
        rows = lookup.search(db, limit=100)
        return sum(1 for r in rows if r["entry"].get("trigger") == "hourly")  # type: ignore[union-attr]

    async def run() -> None:
        first = await watch.check("start")
        task = asyncio.create_task(watch.run(every_s=0.1))
        try:
            await wait_until_async(lambda: hourly() >= 2, "two hourly clock entries", 30, 0.05)
        finally:
            task.cancel()
        assert watch.latest is not None and watch.latest.synchronized is first.synchronized

    try:
        asyncio.run(run())
    finally:
        log.close()
    assert verify_database(db, log.signer.verifier).ok


def test_the_report_holds_the_linked_entries_and_what_was_done(
    db: Database, tmp_path: Path
) -> None:
    log = AuditLog(db, Signer.load_or_create(tmp_path / "signing.key", "test-log"), "test-log")
    model = {"id": "m-1", "weights_sha256": "ab" * 32, "engine_config_sha256": "cd" * 32}
    log.append(records.BEGIN, {"model": model}, request_id="chatcmpl-7").result()
    log.append(records.END, {"outcome": "ok"}, request_id="chatcmpl-7").result()
    log.append(records.ADMIN, {"actor": ACTOR, "action": "tenant.create"}).result()
    log.checkpoint()

    def write(kind: str, fields: dict[str, Any]) -> None:
        log.append(kind, fields).result()

    made = incidents.open_incident(db, write, ACTOR, "serious", "Wrong | dose", AWARE)
    incidents.link(db, write, ACTOR, made.id, request_id="chatcmpl-7")
    incidents.link(db, write, ACTOR, made.id, audit_range=(2, 2))
    incidents.set_status(db, write, ACTOR, made.id, "investigating", "Stopped the model")
    found = incidents.get(db, made.id)
    report = incident_report.render(db, found, incidents.events(db, made.id), AWARE + 3600)
    assert f"| m-1 | {'ab' * 32} | {'cd' * 32} |" in report
    assert "| 0 |" in report and "| request.begin | chatcmpl-7 |" in report
    assert "| 2 |" in report and "| admin |" in report  # the linked range
    assert "| incident.open |" in report and "| incident.status |" in report
    assert "Wrong \\| dose" in report and "Stopped the model" in report
    assert "AI Act Art. 73(2)" in report and "| Time left | 359.0 hours |" in report
    assert "No linked request was reviewed." in report  # the reviews table exists, empty
    assert "Latest signed checkpoint (size 3)" in report
