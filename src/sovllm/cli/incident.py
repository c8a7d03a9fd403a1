"""`sovllm incident open|link|status|list|show|export`: serious incidents (AI Act Art. 73) and
security incidents (ISO/IEC 27001 A.5.24-A.5.28), on the server's database.

Each change is an audit entry with its actor (the user and host at the command line).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from sovllm.cli.common import (
    ConfigOpt,
    audit_writer,
    cli_actor,
    fail,
    open_db,
    parse_date,
    record_read,
)
from sovllm.governance import incident_report, incidents
from sovllm.store.db import Database

incident_app = typer.Typer(
    help="Incidents and their reporting deadlines (AI Act Art. 73).", no_args_is_help=True
)
IdArg = Annotated[str, typer.Argument(help="The incident's id (inc-…).")]
_RANGE = re.compile(r"^(\d+)-(\d+)$")


def _left(seconds: float | None) -> str:
    if seconds is None:
        return "no report pending"
    hours = abs(seconds) / 3600
    when = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"
    return f"report due in {when}" if seconds >= 0 else f"report OVERDUE by {when}"


def _line(found: incidents.Incident, now: float) -> str:
    return (
        f"{found.id}  {found.severity:<23} {found.status:<13} "
        f"{_left(found.seconds_left(now)):<26} {found.summary[:60]}"
    )


def _get(db: Database, incident_id: str) -> incidents.Incident:
    try:
        return incidents.get(db, incident_id)
    except incidents.IncidentNotFound as exc:
        raise fail(str(exc)) from None


@incident_app.command("open")
def open_(
    severity: Annotated[
        str,
        typer.Option(
            help="The class that sets the reporting deadline: "
            + "; ".join(f"{s.name} ({s.meaning})" for s in incidents.SEVERITIES.values())
        ),
    ],
    summary: Annotated[str, typer.Option(help="What happened, in a sentence or two.")],
    aware_at: Annotated[
        str | None,
        typer.Option(
            "--aware-at",
            help="When the deployer became aware (ISO 8601; naive is UTC) \\[now]: the deadline "
            "runs from here.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Open an incident; print its id and the reporting deadline."""
    if severity not in incidents.SEVERITIES:
        raise typer.BadParameter(
            f"must be one of {', '.join(incidents.SEVERITIES)}", param_hint="--severity"
        )
    if not summary.strip():
        raise typer.BadParameter("must not be empty", param_hint="--summary")
    aware = parse_date(aware_at, "--aware-at").timestamp() if aware_at else None
    db = open_db(config)
    try:
        made = incidents.open_incident(
            db, audit_writer(config, db), cli_actor(), severity, summary, aware
        )
    except incidents.IncidentError as exc:
        raise fail(str(exc), 2) from None
    d = made.as_dict()
    typer.echo(f"opened {made.id} ({made.severity}, {d['basis']})")
    typer.echo(f"report due by {d['report_deadline']}" if d["report_deadline"] else _left(None))


@incident_app.command("link")
def link(
    incident_id: IdArg,
    request: Annotated[
        str | None, typer.Option("--request", help="A request id (chatcmpl-…) in the audit log.")
    ] = None,
    audit: Annotated[
        str | None,
        typer.Option("--audit", help="A range of audit entries FROM-TO (both included)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Tie a request or a range of audit entries to an incident (its report's timeline)."""
    if (request is None) == (audit is None):
        raise typer.BadParameter(
            "give exactly one of --request ID, --audit FROM-TO", param_hint="--request/--audit"
        )
    span: tuple[int, int] | None = None
    if audit is not None:
        m = _RANGE.match(audit.strip())
        if m is None:
            raise typer.BadParameter(
                f"{audit!r} is not FROM-TO, e.g. 120-180", param_hint="--audit"
            )
        span = (int(m[1]), int(m[2]))
    db = open_db(config)
    _get(db, incident_id)
    try:
        incidents.link(db, audit_writer(config, db), cli_actor(), incident_id, request, span)
    except incidents.IncidentConflict as exc:
        raise fail(str(exc)) from None
    except incidents.IncidentError as exc:
        raise fail(str(exc), 2) from None
    what = f"request {request}" if request else f"audit entries {span[0]}-{span[1]}"  # type: ignore[index]
    typer.echo(f"linked {what} to {incident_id}")


@incident_app.command("status")
def status(
    incident_id: IdArg,
    new: Annotated[str, typer.Argument(help="investigating, reported or closed.")],
    note: Annotated[str, typer.Option(help="What was done (kept in the report).")] = "",
    config: ConfigOpt = None,
) -> None:
    """Move an incident on; `reported` stops its deadline's countdown."""
    if new not in incidents.STATUSES[1:]:
        raise typer.BadParameter(
            f"must be one of {', '.join(incidents.STATUSES[1:])}", param_hint="STATUS"
        )
    db = open_db(config)
    _get(db, incident_id)
    try:
        found = incidents.set_status(
            db, audit_writer(config, db), cli_actor(), incident_id, new, note
        )
    except incidents.IncidentConflict as exc:
        raise fail(str(exc)) from None
    except incidents.IncidentError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"{found.id} is {found.status}")


@incident_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Every incident, newest first, with its deadline's countdown."""
    found = incidents.list_incidents(open_db(config))
    now = time.time()
    if as_json:
        typer.echo(json.dumps([i.as_dict(now) for i in found], indent=2))
        return
    if not found:
        typer.echo("no incidents")
    for i in found:
        typer.echo(_line(i, now))


@incident_app.command("show")
def show(incident_id: IdArg, config: ConfigOpt = None) -> None:
    """One incident, with what was done about it."""
    db = open_db(config)
    found = _get(db, incident_id)
    shown = found.as_dict() | {"events": [e.as_dict() for e in incidents.events(db, incident_id)]}
    typer.echo(json.dumps(shown, indent=2))
    typer.echo(_left(found.seconds_left(time.time())))


@incident_app.command("export")
def export(
    incident_id: IdArg,
    out: Annotated[Path, typer.Option("--out", help="The Markdown file to write.")],
    config: ConfigOpt = None,
) -> None:
    """Write the report for the authority (Markdown): the incident, the timeline from the audit
    log, the model and its weights' hash, the stops, the reviews and what was done."""
    db = open_db(config)
    found = _get(db, incident_id)
    history = incidents.events(db, incident_id)
    # The report carries audit entries (who sent what, when): reading them is recorded first.
    record_read(config, db, "incident.export", {"incident": incident_id}, 1)
    report = incident_report.render(db, found, history, time.time())
    try:
        out.write_text(report, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {out}")
