"""The report of an incident for the authority (AI Act Art. 73; GDPR Art. 33), in Markdown.

Markdown because it is read as it is (in an e-mail, an editor or the authority's web form,
where the text is pasted) and turns into HTML or PDF with any tool; the evidence pack
(`sovllm compliance report`) is the HTML and PDF document.

What it holds, each part from its source of record:
- the incident: class, legal basis, awareness, deadline, status;
- the timeline: the audit log's entries of the linked requests and ranges, and of the
  incident itself, with the log's latest signed checkpoint to verify them against;
- the model and its weights' hash, from the linked requests' `request.begin` entries;
- the stops and resumes made while it was open, and those in force now;
- the reviews of the linked requests, where the service keeps reviews;
- what was done: the status changes and their notes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import inspect, text

from sovllm.governance import oversight
from sovllm.governance.audit import records
from sovllm.governance.audit.log import PRUNE_KIND, utc
from sovllm.governance.incidents import SEVERITIES, Event, Incident
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction

_BY_REQUEST = SQL(
    "SELECT seq, at, kind, request_id, body FROM audit_entries WHERE request_id = :rid"
)
_BY_RANGE = SQL(
    "SELECT seq, at, kind, request_id, body FROM audit_entries WHERE seq >= :first AND seq <= :last"
)
_BY_KIND = SQL(
    "SELECT seq, at, kind, request_id, body FROM audit_entries "
    "WHERE kind = :kind AND at >= :since AND at <= :until"
)
_CHECKPOINT = SQL("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
INCIDENT_KINDS = (records.INCIDENT_OPEN, records.INCIDENT_LINK, records.INCIDENT_STATUS)
STOP_KINDS = (records.STOP, records.RESUME)

Row = tuple[int, float, str, str | None, dict[str, Any] | None]
"""seq, at, kind, request id, body (None: pruned past retention)."""


def _rows(raw: Iterable[tuple[Any, ...]]) -> list[Row]:
    out: list[Row] = []
    for seq, at, kind, rid, body in raw:
        parsed = json.loads(body) if body is not None else None
        if parsed is not None and (parsed.get("seq") != seq or parsed.get("kind") != kind):
            parsed = {"contradicts_its_row": True}  # `sovllm audit verify` names it
        out.append((int(seq), float(at), str(kind), rid, parsed))
    return out


def _cell(value: object) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def _who(body: Mapping[str, Any] | None) -> str:
    if not body:
        return ""
    who = body.get("principal") or body.get("actor") or {}
    if not isinstance(who, dict):
        return str(who)
    return ", ".join(f"{k} {v}" for k, v in who.items() if v is not None)


def _detail(kind: str, body: Mapping[str, Any] | None) -> str:
    if body is None:
        return "(body pruned past retention; its leaf hash stays in the tree)"
    if body.get("contradicts_its_row"):
        return "(the row contradicts its hashed body: run `sovllm audit verify`)"
    skip = {"v", "seq", "time", "kind", "request_id", "principal", "actor"}
    shown = {k: v for k, v in body.items() if k not in skip}
    words = json.dumps(shown, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return words if len(words) <= 240 else words[:237] + "..."


def _timeline(db: Database, incident: Incident, links: list[Event]) -> list[Row]:
    found: dict[int, Row] = {}
    with raw_transaction(db) as tx:
        for e in links:
            if e.request_id is not None:
                rows = tx.all(_BY_REQUEST, {"rid": e.request_id})
            else:
                rows = tx.all(_BY_RANGE, {"first": e.from_seq, "last": e.to_seq})
            found.update((r[0], r) for r in _rows(rows))
        for kind in INCIDENT_KINDS:
            params = {"kind": kind, "since": incident.opened_at - 60, "until": time.time() + 60}
            for r in _rows(tx.all(_BY_KIND, params)):
                if r[4] is not None and r[4].get("incident") == incident.id:
                    found[r[0]] = r
    return [found[seq] for seq in sorted(found)]


def _stops(db: Database, since: float, until: float) -> list[Row]:
    with raw_transaction(db) as tx:
        rows = [
            r
            for kind in STOP_KINDS
            for r in _rows(tx.all(_BY_KIND, {"kind": kind, "since": since, "until": until}))
        ]
    return sorted(rows)


REVIEW_COLUMNS = ("request_id", "mode", "status", "decided_at", "reviewer", "note")
"""What the report shows of a review: never its sealed content or its subject."""


def _reviews(db: Database, request_ids: list[str]) -> list[dict[str, Any]] | None:
    """The decisions on these requests in a `reviews` table; None where the service keeps none."""
    found = inspect(db.engine)
    if not found.has_table("reviews"):
        return None
    present = {c["name"] for c in found.get_columns("reviews")}
    columns = [c for c in REVIEW_COLUMNS if c in present]
    if "request_id" not in present or not request_ids:
        return []
    names = ", ".join(f":r{i}" for i in range(len(request_ids)))
    query = text(f"SELECT {', '.join(columns)} FROM reviews WHERE request_id IN ({names})")
    with db.read() as s:
        result = s.execute(query, {f"r{i}": r for i, r in enumerate(request_ids)})
        rows = [dict(row._mapping) for row in result]
    for row in rows:
        if isinstance(row.get("decided_at"), float):
            row["decided_at"] = utc(row["decided_at"])
    return rows


def _table(header: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render(db: Database, incident: Incident, history: list[Event], now: float) -> str:
    """The report, as Markdown."""
    severity = SEVERITIES.get(incident.severity)
    links = [e for e in history if e.action == "link"]
    timeline = _timeline(db, incident, links)
    request_ids = sorted({e.request_id for e in links if e.request_id is not None})
    d = incident.as_dict(now)
    left = incident.seconds_left(now)
    out = [
        f"# Incident report {incident.id}",
        "",
        f"Generated {utc(now)} by sovllm from its database and its tamper-evident audit log.",
        "",
        "## The incident",
        "",
        *_table(
            ["", ""],
            [
                ["Summary", incident.summary],
                ["Class", f"{incident.severity}: {severity.meaning if severity else '?'}"],
                ["Legal basis", severity.basis if severity else "?"],
                ["Deployer aware since", d["aware_at"]],
                ["Report due by", d["report_deadline"] or "no report due to an authority"],
                ["Time left", "—" if left is None else f"{left / 3600:.1f} hours"],
                ["Status", incident.status],
                ["Opened", f"{d['opened_at']} by {_who({'actor': incident.actor})}"],
                ["Reported", d["reported_at"] or "not yet"],
                ["Closed", d["closed_at"] or "not yet"],
            ],
        ),
        "",
        "## The model",
        "",
    ]
    models = {
        json.dumps(r[4]["model"], sort_keys=True)
        for r in timeline
        if r[2] == records.BEGIN and r[4] is not None and isinstance(r[4].get("model"), dict)
    }
    if models:
        out += _table(
            ["Model", "Weights SHA-256", "Engine configuration SHA-256"],
            [
                [m.get("id"), m.get("weights_sha256"), m.get("engine_config_sha256")]
                for m in map(json.loads, sorted(models))
            ],
        )
    else:
        out.append("No linked audit entry records a model (link a request to name it).")
    out += ["", "## Timeline (audit log)", ""]
    if timeline:
        out += _table(
            ["Entry", "Time (UTC)", "Kind", "Request", "Who", "Details"],
            [[r[0], utc(r[1]), r[2], r[3], _who(r[4]), _detail(r[2], r[4])] for r in timeline],
        )
    else:
        out.append("No audit entry is linked.")
    until = incident.closed_at or now
    stops = _stops(db, min([incident.aware_at, *(r[1] for r in timeline)]), until)
    out += ["", "## Stops (AI Act Art. 14(4)(e))", ""]
    if stops:
        out += _table(
            ["Entry", "Time (UTC)", "Kind", "Who", "Details"],
            [[r[0], utc(r[1]), r[2], _who(r[4]), _detail(r[2], r[4])] for r in stops],
        )
    else:
        out.append("No stop or resume from the awareness to the closure (or now).")
    now_in_force = oversight.list_stops(db)
    out += ["", f"In force now: {', '.join(s.what for s in now_in_force) or 'none'}.", ""]
    out += ["## Reviews (AI Act Art. 14(4)(b)-(d))", ""]
    reviews = _reviews(db, request_ids)
    in_log = [r for r in timeline if r[2].startswith("review.")]
    if reviews is None and not in_log:
        out.append("This installation keeps no human reviews of answers.")
    elif not reviews and not in_log:
        out.append("No linked request was reviewed.")
    else:
        for row in reviews or []:
            out.append("- " + ", ".join(f"{k}: {_cell(v)}" for k, v in row.items()))
        for r in in_log:
            out.append(f"- entry {r[0]} ({r[2]}, {utc(r[1])}): {_detail(r[2], r[4])}")
    out += ["", "## What was done", ""]
    out += _table(
        ["Time (UTC)", "Action", "Status", "Who", "Note or link"],
        [
            [
                utc(e.at),
                e.action,
                e.status or "",
                _who({"actor": e.actor}),
                e.note
                or (f"request {e.request_id}" if e.request_id else "")
                or (f"audit entries {e.from_seq}-{e.to_seq}" if e.from_seq is not None else ""),
            ]
            for e in history
        ],
    )
    out += ["", *_integrity(db, timeline)]
    return "\n".join(out) + "\n"


def _integrity(db: Database, timeline: list[Row]) -> list[str]:
    with raw_transaction(db) as tx:
        latest = tx.one(_CHECKPOINT, {})
    lines = ["## Verifying this report", ""]
    pruned = sum(1 for r in timeline if r[4] is None or r[2] == PRUNE_KIND)
    if pruned:
        lines.append(f"{pruned} linked entries were pruned past retention: only their hashes stay.")
    lines += [
        "Each entry above is a leaf of the audit log's Merkle tree. `sovllm audit prove "
        "REQUEST_ID` gives a request's inclusion proofs; `sovllm audit export` and "
        "`sovllm audit verify --offline FILE --checkpoint NOTE` check the whole log against "
        "the signed checkpoint below.",
        "",
    ]
    if latest is None:
        return [*lines, "The log has no signed checkpoint yet."]
    return [
        *lines,
        f"Latest signed checkpoint (size {latest[0]}):",
        "",
        "```",
        str(latest[1]).strip(),
        "```",
    ]
