"""Admin API for auditors under /admin/v1: the audit log, stored content, erasure and refused
sign-ins.

Reads of the log, stored content and refused sign-ins are `access.read` entries
(`audited_read`), durable before the data goes out; the last verification's status is not: it
holds no personal data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from pydantic import Field

from sovllm.api.admin_common import PREFIX, Auditor, Body, ListOf, actor, audited_read
from sovllm.api.errors import APIError
from sovllm.api.state import app_state
from sovllm.governance.access import logged_denials
from sovllm.governance.audit import lookup, records
from sovllm.governance.audit.verify import verify_log
from sovllm.governance.privacy import erasure

router = APIRouter(prefix=PREFIX, tags=["admin"])


class EraseRequest(Body):
    subject: str = Field(
        min_length=1,
        max_length=256,
        description="The `user` value the subject's requests carried, or key:<key id>.",
    )


@router.post("/privacy/erase", dependencies=[Auditor])
async def erase_subject(body: EraseRequest, request: Request) -> dict[str, object]:
    """Crypto-shred a data subject's stored content; returns a signed erasure receipt."""
    state = app_state(request)
    who = actor(request)
    # Nothing erased (ErasureError, CheckpointError) is a 409 saying why (api/errors.py).
    return await to_thread.run_sync(erasure.erase, state.vault, state.audit, body.subject, who)


@router.get("/audit/content/{request_id}", dependencies=[Auditor])
async def read_content(request_id: str, request: Request) -> dict[str, object]:
    """What the tenant's content policy kept of a request; null where the subject was erased."""
    rows = await to_thread.run_sync(app_state(request).vault.read, request_id)
    # Decrypted content: the attempt is recorded even when nothing was kept.
    await audited_read(request, "content", {"request_id": request_id}, len(rows))
    if not rows:
        raise APIError(404, f"no stored content for request {request_id!r} (policy none?)")
    parts = [{"part": c.part, "policy": c.policy, "text": c.text} for c in rows]
    return {"request_id": request_id, "parts": parts}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@router.get("/audit/entries", dependencies=[Auditor])
async def audit_entries(
    request: Request,
    request_id: str | None = None,
    tenant: str | None = None,
    since: Annotated[dt.datetime | None, Query(description="ISO 8601, UTC if no zone.")] = None,
    until: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ListOf[dict[str, object]]:
    """Audit entries by request id, tenant or time, newest first."""

    def ts(value: dt.datetime | None) -> float | None:
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()

    rows = await to_thread.run_sync(
        lambda: lookup.search(
            app_state(request).db, request_id, tenant, ts(since), ts(until), limit
        )
    )
    query = {"request_id": request_id, "tenant": tenant, "limit": limit}
    await audited_read(
        request, "audit.entries", {**query, "since": _iso(since), "until": _iso(until)}, len(rows)
    )
    return ListOf[dict[str, object]](data=rows)


@router.post("/audit/verify", dependencies=[Auditor])
async def audit_verify_now(request: Request) -> dict[str, object]:
    """Verify the whole log now (the console's "verify now"); the result joins the log."""
    state = app_state(request)
    report = await to_thread.run_sync(verify_log, state.audit, state.audit.signer.verifier)
    fields = records.audit_verify(actor(request), report)
    await asyncio.wrap_future(state.audit.append(records.VERIFY, fields))
    return {
        **fields["result"],
        "problems": report.problems,
        "verified_at": dt.datetime.now(dt.UTC).isoformat(),
        "actor": fields["actor"],
    }


@router.get("/audit/verify/last", dependencies=[Auditor])
async def audit_last_verification(request: Request) -> dict[str, object]:
    """The most recent verification run from this service, by whom and when (404: none yet)."""
    db = app_state(request).db
    entry = await to_thread.run_sync(lookup.latest_of_kind, db, records.VERIFY)
    if entry is None:
        raise APIError(404, "the audit log has not been verified from this service yet")
    result = entry.get("result")
    shown = result if isinstance(result, dict) else {}
    return {**shown, "verified_at": entry.get("time"), "actor": entry.get("actor")}


@router.get("/audit/checkpoint", dependencies=[Auditor])
async def latest_checkpoint(request: Request) -> dict[str, object]:
    """The latest signed checkpoint (C2SP note) and the verifier key."""
    audit = app_state(request).audit
    note = await to_thread.run_sync(audit.latest_note)
    if note is None:
        note = await to_thread.run_sync(audit.checkpoint)
    await audited_read(request, "audit.checkpoint", {}, 1)
    return {"note": note, "verifier_key": audit.signer.verifier.encode()}


@router.get("/access/denied", dependencies=[Auditor])
async def access_denied(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> ListOf[dict[str, object]]:
    """Refused sign-ins (401, 403, and 429 for a source past its limit), newest first: the
    minute still open on this gateway (`pending`), then the `access.denied` entries."""
    state = app_state(request)
    pending = state.access.pending()[:limit]
    logged = await to_thread.run_sync(logged_denials, state.db, limit - len(pending))
    rows = [*pending, *logged]
    await audited_read(request, "access.denied", {"limit": limit}, len(rows))
    return ListOf[dict[str, object]](data=rows)
