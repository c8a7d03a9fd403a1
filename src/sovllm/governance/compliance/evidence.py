"""Live evidence from this installation, for the evidence pack: read, never assumed.

Each section is read from the database, the audit log or the configuration at the moment the
report is made. The audit log is verified afresh. Where there is nothing to show (no purge has
run yet, no incident was ever opened), the section says so and its status is `missing`: the
report prints it in red rather than fill it with a plausible default.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sovllm.config import Settings
from sovllm.engines.catalog import ModelNotFoundError, weights_sha256
from sovllm.governance import oversight, tenants
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import CheckpointError, parse, verify
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_log
from sovllm.governance.records import record_of_processing, to_markdown
from sovllm.store.raw import SQL, raw_transaction

Status = Literal["ok", "missing", "failed"]
SHOWN = 5
"""Entries of a kind listed in a section, newest first; the count covers them all."""


@dataclass
class Section:
    title: str
    status: Status
    facts: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""
    text: str = ""
    """Preformatted text (the Art. 30 record)."""


def collect(settings: Settings, log: AuditLog) -> dict[str, Section]:
    """Every section the checklist's rows name, by key."""
    makers: dict[str, Callable[[Settings, AuditLog], Section]] = {
        "verification": _verification,
        "checkpoint": _checkpoint,
        "retention": _retention,
        "erasures": lambda s, lg: _kind_section(lg, "Erasures", (records.ERASE,), "erasure"),
        "stops": _stops,
        "reviews": lambda s, lg: _kind_section(lg, "Reviews", ("review.%",), "review"),
        "incidents": lambda s, lg: _kind_section(lg, "Incidents", ("incident.%",), "incident"),
        "evals": lambda s, lg: _kind_section(lg, "Evaluations", (records.MODEL_EVAL,), "eval"),
        "models": lambda s, lg: _kind_section(
            lg, "Model allow-list", ("model.approve", "model.revoke"), "approval"
        ),
        "clock": lambda s, lg: _kind_section(lg, "Clock", (records.CLOCK,), "clock entry"),
        "backups": lambda s, lg: _kind_section(
            lg, "Backups and restores", (records.BACKUP, records.RESTORE), "backup or restore"
        ),
        "keys": _keys,
        "model": _model,
        "art30": _art30,
    }
    return {key: make(settings, log) for key, make in makers.items()}


def _verification(settings: Settings, log: AuditLog) -> Section:
    report = verify_log(log, log.signer.verifier)
    facts = [
        ("verified now", report.summary()),
        ("entries", str(report.size)),
        ("signed checkpoints", str(report.checkpoints)),
        ("pruned past retention", str(report.pruned)),
    ]
    last = _latest(log, (records.VERIFY,))
    if last:
        result = last[0].get("result") or {}
        facts.append(("last verification from the service", _when_who(last[0])))
        facts.append(("its result", str(result.get("summary", ""))))
    return Section("Audit log verification", "ok" if report.ok else "failed", facts)


def _checkpoint(settings: Settings, log: AuditLog) -> Section:
    note = log.latest_note()
    if note is None:
        return Section("Latest signed checkpoint", "missing", note="no checkpoint signed yet")
    try:
        checkpoint = verify(note, log.signer.verifier)
    except CheckpointError as exc:
        parsed, _ = parse(note)
        facts = [("size", str(parsed.size))]
        return Section("Latest signed checkpoint", "failed", facts, note=str(exc))
    facts = [
        ("origin", checkpoint.origin),
        ("size", str(checkpoint.size)),
        ("root", checkpoint.body().splitlines()[2]),
        ("signature", "valid, by this installation's key"),
    ]
    return Section("Latest signed checkpoint", "ok", facts, text=note)


def _retention(settings: Settings, log: AuditLog) -> Section:
    r = settings.retention
    facts = [
        ("audit metadata", f"{r.audit_days} days"),
        ("content", f"{r.content_days} days"),
        ("usage detail", f"{r.usage_days} days"),
        ("applied every", f"{r.purge_every_s:g} s"),
    ]
    # A run that finds nothing past its limits records nothing: the entries are deletions.
    last = _latest(log, (records.PURGE, "retention.%"))
    if not last:
        note = "nothing deleted under retention yet (no purge, prune or roll-up in the log)"
        return Section("Retention", "missing", facts, note=note)
    facts.append((f"last deletion ({last[0].get('kind')})", _when_who(last[0])))
    return Section("Retention", "ok", facts)


def _stops(settings: Settings, log: AuditLog) -> Section:
    now = oversight.list_stops(log.db)
    facts = [
        (f"in force: {s.scope} {s.target}".rstrip(), f"{s.mode}, {s.reason}") for s in now
    ] or [("in force", "none")]
    section = _kind_section(log, "Stops and resumes", (records.STOP, records.RESUME), "event")
    section.facts = facts + section.facts
    return section


def _keys(settings: Settings, log: AuditLog) -> Section:
    keys = tenants.list_keys(log.db)
    live = [k for k in keys if k.active]
    by_role = collections.Counter(k.role for k in live)
    facts = [("active keys", str(len(live))), ("revoked or expired", str(len(keys) - len(live)))]
    facts += [(f"role {role}", str(n)) for role, n in sorted(by_role.items())]
    facts += [
        (f"admin key {k.prefix}…", f"tenant {k.tenant}, {k.name or 'unnamed'}")
        for k in live
        if k.role == "admin"
    ]
    return Section("Keys and roles", "ok" if live else "missing", facts)


def _model(settings: Settings, log: AuditLog) -> Section:
    try:
        source = settings.resolve_model()
    except ModelNotFoundError as exc:
        return Section("Served model", "failed", note=str(exc))
    sha = weights_sha256(source.path, settings.data_dir / "cache")
    facts = [("model", source.name), ("weights", str(source.path)), ("SHA-256", sha)]
    return Section("Served model", "ok", facts)


def _art30(settings: Settings, log: AuditLog) -> Section:
    record = record_of_processing(settings, log.db)
    text = to_markdown(record)
    gaps = "NOT SET" in text
    note = "settings the record needs are not configured (NOT SET below)" if gaps else ""
    return Section(
        "Record of processing (GDPR Art. 30)", "missing" if gaps else "ok", text=text, note=note
    )


def _kind_section(log: AuditLog, title: str, kinds: tuple[str, ...], noun: str) -> Section:
    count, latest = _count(log, kinds), _latest(log, kinds)
    if not count:
        return Section(title, "missing", note=f"no {noun} recorded in the audit log")
    facts = [("entries in the audit log", str(count))]
    facts += [(str(e.get("kind")), f"{_when_who(e)}: {_gist(e)}") for e in latest]
    return Section(title, "ok", facts)


def _where(kinds: tuple[str, ...]) -> tuple[str, dict[str, object]]:
    clauses = " OR ".join(f"kind LIKE :k{i}" for i in range(len(kinds)))
    return f"({clauses})", {f"k{i}": k for i, k in enumerate(kinds)}


def _count(log: AuditLog, kinds: tuple[str, ...]) -> int:
    where, params = _where(kinds)
    with raw_transaction(log.db) as tx:
        row = tx.one(SQL(f"SELECT COUNT(*) FROM audit_entries WHERE {where}"), params)
    return int(row[0]) if row else 0


def _latest(log: AuditLog, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """The newest entries of these kinds that still have their body; the body decides the
    kind (a row whose column was edited is not shown as something it is not)."""
    where, params = _where(kinds)
    sql = SQL(
        f"SELECT kind, body FROM audit_entries WHERE {where} AND body IS NOT NULL "
        f"ORDER BY seq DESC LIMIT {SHOWN}"
    )
    with raw_transaction(log.db) as tx:
        rows = tx.all(sql, params)
    entries = [json.loads(body) for _, body in rows]
    return [e for (kind, _), e in zip(rows, entries, strict=True) if e.get("kind") == kind]


def _when_who(entry: dict[str, Any]) -> str:
    who = entry.get("actor") or entry.get("principal") or {}
    name = ", ".join(f"{k} {v}" for k, v in who.items()) if isinstance(who, dict) else str(who)
    return f"{entry.get('time', '?')} by {name or 'the service'}"


def _gist(entry: dict[str, Any]) -> str:
    """A short description of an entry: its plain top-level facts, never nested content."""
    skip = {"kind", "time", "actor", "principal", "prev", "seq"}
    plain = {
        k: v for k, v in entry.items() if k not in skip and isinstance(v, str | int | float | bool)
    }
    text = ", ".join(f"{k} {v}" for k, v in plain.items())
    return text[:200] + ("…" if len(text) > 200 else "")
