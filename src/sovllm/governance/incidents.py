"""Incidents: serious incidents under the AI Act (Art. 73) and information security incidents
(ISO/IEC 27001 A.5.24-A.5.28), from the deployer's awareness to the report and closure.

The severity class sets the reporting deadline, counted from when the deployer became aware
(Art. 73(2)-(4)). Each change (opening, a link to a request or a range of audit entries, a
status change) is recorded in the audit log with its actor before it is stored, as the stop
switch does: nothing is shown as done that has no record.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from sovllm.governance.audit import operations, records
from sovllm.governance.incident_classes import DAY_S as DAY_S
from sovllm.governance.incident_classes import SEVERITIES as SEVERITIES
from sovllm.governance.incident_classes import IncidentError as IncidentError
from sovllm.governance.incident_classes import Severity as Severity
from sovllm.governance.incident_classes import deadline as deadline
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction

MAX_RANGE = 10_000
"""The most audit entries one link may cover: the export lists each of them."""
MAX_SUMMARY = 2000
MAX_NOTE = 4000
CLOCK_SKEW_S = 300.0
"""How far in the future an `aware_at` may lie (another machine's clock) before it is refused."""
STATUSES = ("open", "investigating", "reported", "closed")
PENDING = ("open", "investigating")
"""The statuses in which a report may still be due."""


class IncidentNotFound(IncidentError):
    def __init__(self, incident_id: str) -> None:
        super().__init__(f"no incident {incident_id!r} (`sovllm incident list` lists them)")


class IncidentConflict(IncidentError):
    """A change the incident's state does not allow (it is closed, or already so)."""


def utc(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


@dataclass(frozen=True)
class Incident:
    id: str
    severity: str
    summary: str
    status: str
    aware_at: float
    deadline_at: float | None
    opened_at: float
    reported_at: float | None
    closed_at: float | None
    actor: dict[str, Any]

    @property
    def pending_report(self) -> bool:
        """A report is due and not yet made (the deadline counts down)."""
        return self.deadline_at is not None and self.status in PENDING

    def seconds_left(self, now: float) -> float | None:
        """Until the report's deadline (negative: overdue); None when none is pending."""
        return self.deadline_at - now if self.pending_report and self.deadline_at else None

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """As the API and the command line show it."""
        severity = SEVERITIES.get(self.severity)
        return {
            "id": self.id,
            "severity": self.severity,
            "basis": severity.basis if severity else None,
            "summary": self.summary,
            "status": self.status,
            "aware_at": utc(self.aware_at),
            "report_deadline": utc(self.deadline_at),
            "seconds_left": self.seconds_left(time.time() if now is None else now),
            "opened_at": utc(self.opened_at),
            "reported_at": utc(self.reported_at),
            "closed_at": utc(self.closed_at),
            "actor": self.actor,
        }


@dataclass(frozen=True)
class Event:
    at: float
    action: str
    status: str | None
    note: str
    request_id: str | None
    from_seq: int | None
    to_seq: int | None
    actor: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        span = [self.from_seq, self.to_seq] if self.from_seq is not None else None
        return {
            "at": utc(self.at),
            "action": self.action,
            "status": self.status,
            "note": self.note,
            "request_id": self.request_id,
            "audit_range": span,
            "actor": self.actor,
        }


_COLUMNS = (
    "id, severity, summary, status, aware_at, deadline_at, opened_at, reported_at, closed_at, actor"
)
_GET = SQL(f"SELECT {_COLUMNS} FROM incidents WHERE id = :id")
_LIST = SQL(f"SELECT {_COLUMNS} FROM incidents ORDER BY opened_at DESC")
_PENDING = SQL(
    f"SELECT {_COLUMNS} FROM incidents WHERE status IN ('open', 'investigating') "
    "AND deadline_at IS NOT NULL"
)
_INSERT = SQL(
    f"INSERT INTO incidents ({_COLUMNS}) VALUES (:id, :severity, :summary, :status, :aware_at, "
    ":deadline_at, :opened_at, NULL, NULL, :actor)"
)
_EVENT = SQL(
    "INSERT INTO incident_events (incident_id, at, action, status, note, request_id, from_seq, "
    "to_seq, actor) VALUES (:incident_id, :at, :action, :status, :note, :request_id, "
    ":from_seq, :to_seq, :actor)"
)
_EVENTS = SQL(
    "SELECT at, action, status, note, request_id, from_seq, to_seq, actor FROM incident_events "
    "WHERE incident_id = :id ORDER BY id"
)
_STATUS = SQL(
    "UPDATE incidents SET status = :status, reported_at = coalesce(reported_at, :reported), "
    "closed_at = :closed WHERE id = :id AND status = :old"
)
_REQUEST_SEEN = SQL("SELECT 1 FROM audit_entries WHERE request_id = :rid LIMIT 1")
_LOG_SIZE = SQL("SELECT coalesce(max(seq) + 1, 0) FROM audit_entries")


def _incident(row: tuple[Any, ...]) -> Incident:
    def opt(value: Any) -> float | None:
        return None if value is None else float(value)

    return Incident(
        id=str(row[0]),
        severity=str(row[1]),
        summary=str(row[2]),
        status=str(row[3]),
        aware_at=float(row[4]),
        deadline_at=opt(row[5]),
        opened_at=float(row[6]),
        reported_at=opt(row[7]),
        closed_at=opt(row[8]),
        actor=json.loads(row[9]),
    )


def _read(db: Database, sql: SQL, params: Mapping[str, object]) -> list[tuple[Any, ...]]:
    """A plain read (never SQLite's write lock: the metric reads this at every scrape)."""
    with db.read() as s:
        return [tuple(r) for r in s.execute(text(sql.sqlite), dict(params)).all()]


def get(db: Database, incident_id: str) -> Incident:
    rows = _read(db, _GET, {"id": incident_id})
    if not rows:
        raise IncidentNotFound(incident_id)
    return _incident(rows[0])


def list_incidents(db: Database) -> list[Incident]:
    """Every incident, newest first."""
    return [_incident(r) for r in _read(db, _LIST, {})]


def pending_reports(db: Database) -> list[Incident]:
    """The incidents whose report is due and not yet made (for the metric and its alert)."""
    return [_incident(r) for r in _read(db, _PENDING, {})]


def events(db: Database, incident_id: str) -> list[Event]:
    rows = _read(db, _EVENTS, {"id": incident_id})
    return [
        Event(
            at=float(r[0]),
            action=str(r[1]),
            status=r[2],
            note=str(r[3] or ""),
            request_id=r[4],
            from_seq=None if r[5] is None else int(r[5]),
            to_seq=None if r[6] is None else int(r[6]),
            actor=json.loads(r[7]),
        )
        for r in rows
    ]


def _text(value: str, what: str, most: int, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise IncidentError(f"the {what} must not be empty")
    if len(value) > most:
        raise IncidentError(f"the {what} is {len(value)} characters; at most {most}")
    return value


def _event(incident_id: str, at: float, action: str, actor: Mapping[str, object]) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "at": at,
        "action": action,
        "status": None,
        "note": "",
        "request_id": None,
        "from_seq": None,
        "to_seq": None,
        "actor": json.dumps(dict(actor)),
    }


def open_incident(
    db: Database,
    write: records.Write,
    actor: Mapping[str, object],
    severity: str,
    summary: str,
    aware_at: float | None = None,
    now: float | None = None,
) -> Incident:
    """Open an incident, recorded first. `aware_at`: when the deployer became aware (default:
    now); the reporting deadline runs from it."""
    now = time.time() if now is None else now
    aware = now if aware_at is None else aware_at
    if aware > now + CLOCK_SKEW_S:
        raise IncidentError(f"the time of awareness {utc(aware)} lies in the future")
    due = deadline(severity, aware)
    text = _text(summary, "summary", MAX_SUMMARY, required=True)
    made = Incident(
        id=f"inc-{dt.datetime.fromtimestamp(now, dt.UTC):%Y%m%d}-{secrets.token_hex(3)}",
        severity=severity,
        summary=text,
        status="open",
        aware_at=aware,
        deadline_at=due,
        opened_at=now,
        reported_at=None,
        closed_at=None,
        actor=dict(actor),
    )
    basis = SEVERITIES[severity].basis
    fields = operations.incident_open(
        actor, made.id, severity, text, str(utc(aware)), utc(due), basis
    )
    write(records.INCIDENT_OPEN, fields)
    row = {k: v for k, v in made.__dict__.items() if k not in ("reported_at", "closed_at")}
    with raw_transaction(db) as tx:
        tx.run(_INSERT, row | {"actor": json.dumps(made.actor)})
        tx.run(_EVENT, _event(made.id, now, "open", actor) | {"status": "open", "note": text})
    return made


def link(
    db: Database,
    write: records.Write,
    actor: Mapping[str, object],
    incident_id: str,
    request_id: str | None = None,
    audit_range: tuple[int, int] | None = None,
) -> Event:
    """Tie a request (by its id in the audit log) or a range of audit entries to an incident."""
    if (request_id is None) == (audit_range is None):
        raise IncidentError("link either a request id or a range of audit entries")
    found = get(db, incident_id)
    if found.status == "closed":
        raise IncidentConflict(f"incident {incident_id} is closed")
    with raw_transaction(db) as tx:
        if request_id is not None and tx.one(_REQUEST_SEEN, {"rid": request_id}) is None:
            raise IncidentError(f"no audit entry for request {request_id!r}")
        size = int((tx.one(_LOG_SIZE, {}) or (0,))[0])
    if audit_range is not None:
        first, last = audit_range
        if first < 0 or last < first:
            raise IncidentError(f"the range {first}-{last} is not FROM-TO with 0 <= FROM <= TO")
        if last >= size:
            held = f"entries 0-{size - 1}" if size else "no entries"
            raise IncidentError(f"the audit log has {held}; {last} is not one")
        if last - first + 1 > MAX_RANGE:
            raise IncidentError(f"a link covers at most {MAX_RANGE} entries; split the range")
    write(
        records.INCIDENT_LINK, operations.incident_link(actor, incident_id, request_id, audit_range)
    )
    now = time.time()
    params = _event(incident_id, now, "link", actor) | {"request_id": request_id}
    if audit_range is not None:
        params |= {"from_seq": audit_range[0], "to_seq": audit_range[1]}
    with raw_transaction(db) as tx:
        tx.run(_EVENT, params)
    return Event(
        now,
        "link",
        None,
        "",
        request_id,
        params["from_seq"],
        params["to_seq"],
        dict(actor),
    )


def set_status(
    db: Database,
    write: records.Write,
    actor: Mapping[str, object],
    incident_id: str,
    status: str,
    note: str = "",
) -> Incident:
    """Move an incident to `status` (investigating, reported, closed), with what was done.
    A closed incident stays closed; `reported` stops its deadline's countdown."""
    if status not in STATUSES[1:]:
        raise IncidentError(f"no status {status!r}; the statuses are: {', '.join(STATUSES[1:])}")
    text = _text(note, "note", MAX_NOTE, required=False)
    found = get(db, incident_id)
    if found.status == "closed":
        raise IncidentConflict(f"incident {incident_id} is closed")
    if found.status == status:
        raise IncidentConflict(f"incident {incident_id} is already {status}")
    write(
        records.INCIDENT_STATUS,
        operations.incident_status(actor, incident_id, found.status, status, text),
    )
    now = time.time()
    change = {
        "id": incident_id,
        "old": found.status,
        "status": status,
        "reported": now if status == "reported" else None,
        "closed": now if status == "closed" else None,
    }
    with raw_transaction(db) as tx:
        if tx.changed(_STATUS, change) != 1:
            raise IncidentConflict(f"incident {incident_id} changed meanwhile; try again")
        tx.run(_EVENT, _event(incident_id, now, "status", actor) | {"status": status, "note": text})
    return get(db, incident_id)
