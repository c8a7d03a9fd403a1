"""Admin API: incidents (AI Act Art. 73; ISO/IEC 27001 A.5.24-A.5.28) and the clock's state
(A.8.17), under /admin/v1, for the console's incident view.

Admins open, link and move incidents on; auditors read them. Each change is
`governance.incidents`'s, recorded in the audit log with its actor before it is stored. The
report carries audit entries, so reading it is an audited read; the list is not (no personal
data beyond what the admins wrote in the summaries).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from pydantic import Field, model_validator

from sovllm.api.admin_common import (
    PREFIX,
    Admin,
    Auditor,
    Body,
    ListOf,
    actor,
    audited_read,
    writer,
)
from sovllm.api.state import app_state
from sovllm.governance import incident_report, incidents

router = APIRouter(prefix=PREFIX, tags=["admin"])
Severity = Annotated[str, Field(description="serious, death, widespread, … (the deadline's class)")]


class IncidentIn(Body):
    severity: Severity
    summary: str = Field(min_length=1, max_length=incidents.MAX_SUMMARY)
    aware_at: dt.datetime | None = Field(
        None, description="When the deployer became aware (ISO 8601; naive is UTC) [now]."
    )


class LinkIn(Body):
    request_id: str | None = Field(None, min_length=1, max_length=64)
    from_seq: int | None = Field(None, ge=0)
    to_seq: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> LinkIn:
        span = (self.from_seq is None, self.to_seq is None)
        if span[0] != span[1]:
            raise ValueError("an audit range needs both from_seq and to_seq")
        if (self.request_id is None) == (self.from_seq is None):
            raise ValueError("give either request_id or from_seq and to_seq")
        return self


class StatusIn(Body):
    status: str = Field(description="investigating, reported or closed.")
    note: str = Field("", max_length=incidents.MAX_NOTE)


def _aware(value: dt.datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


@router.get("/incidents", dependencies=[Auditor])
async def list_incidents(request: Request) -> ListOf[dict[str, object]]:
    """Every incident, newest first, with `seconds_left` to its report's deadline."""
    found = await to_thread.run_sync(incidents.list_incidents, app_state(request).db)
    now = time.time()
    return ListOf[dict[str, object]](data=[i.as_dict(now) for i in found])


@router.get("/incidents/{incident_id}", dependencies=[Auditor])
async def show_incident(incident_id: str, request: Request) -> dict[str, object]:
    db = app_state(request).db
    found = await to_thread.run_sync(incidents.get, db, incident_id)
    history = await to_thread.run_sync(incidents.events, db, incident_id)
    return found.as_dict() | {"events": [e.as_dict() for e in history]}


@router.post("/incidents", dependencies=[Admin], status_code=201)
async def open_incident(body: IncidentIn, request: Request) -> dict[str, object]:
    state = app_state(request)
    made = await to_thread.run_sync(
        incidents.open_incident,
        state.db,
        writer(state),
        actor(request),
        body.severity,
        body.summary,
        _aware(body.aware_at),
    )
    return made.as_dict()


@router.post("/incidents/{incident_id}/links", dependencies=[Admin], status_code=201)
async def link_incident(incident_id: str, body: LinkIn, request: Request) -> dict[str, object]:
    state = app_state(request)
    span = None
    if body.from_seq is not None and body.to_seq is not None:
        span = (body.from_seq, body.to_seq)
    made = await to_thread.run_sync(
        incidents.link,
        state.db,
        writer(state),
        actor(request),
        incident_id,
        body.request_id,
        span,
    )
    return made.as_dict()


@router.post("/incidents/{incident_id}/status", dependencies=[Admin])
async def incident_status(incident_id: str, body: StatusIn, request: Request) -> dict[str, object]:
    state = app_state(request)
    found = await to_thread.run_sync(
        incidents.set_status,
        state.db,
        writer(state),
        actor(request),
        incident_id,
        body.status,
        body.note,
    )
    return found.as_dict()


@router.get("/incidents/{incident_id}/report", dependencies=[Auditor])
async def incident_report_md(incident_id: str, request: Request) -> Response:
    """The report for the authority, as Markdown (as `sovllm incident export` writes it)."""
    db = app_state(request).db
    found = await to_thread.run_sync(incidents.get, db, incident_id)
    history = await to_thread.run_sync(incidents.events, db, incident_id)
    await audited_read(request, "incident.export", {"incident": incident_id}, 1)
    text = await to_thread.run_sync(incident_report.render, db, found, history, time.time())
    name = f"{found.id}.md"
    return Response(
        text,
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/clock", dependencies=[Auditor])
async def clock_state(request: Request) -> dict[str, object]:
    """The clock's last recorded state (ISO/IEC 27001 A.8.17): the console warns when it is
    not synchronised."""
    watch = getattr(request.app.state, "clock", None)
    latest = watch.latest if watch is not None else None
    if latest is None:
        return {"source": "none", "synchronized": None, "detail": "not read yet"}
    return dict(latest.as_dict())
