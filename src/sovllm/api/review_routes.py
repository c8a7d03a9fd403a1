"""The review queue under /admin/v1/reviews (AI Act Art. 14(4)(b)-(d); docs/oversight.md).

For the reviewer and admin roles. A reviewer sees and decides only its own tenant's answers; an
admin, every tenant's. Every read is an `access.read` entry and every decision a
`review.decided` entry, with the actor, durable before the data goes out or the decision is
made (governance/review.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from sovllm.api.admin_common import PREFIX, Body, ListOf, actor, audited_read
from sovllm.api.auth import require
from sovllm.api.state import app_state
from sovllm.governance import review
from sovllm.governance.identity import Principal, Role
from sovllm.governance.review_view import content_view

router = APIRouter(prefix=PREFIX, tags=["review"])
REVIEW_ROLES = frozenset({Role.REVIEWER, Role.ADMIN})
Reviewer = Depends(require(REVIEW_ROLES))


class Decision(Body):
    note: str | None = Field(None, max_length=review.MAX_NOTE)


def _scope(principal: Principal) -> int | None:
    """The tenant whose answers the caller reviews; None (all) for an admin."""
    return None if principal.role == Role.ADMIN else principal.tenant_id


@router.get("/reviews")
async def list_reviews(
    request: Request,
    principal: Principal = Reviewer,
    status: Annotated[str | None, Query(description="pending (default), approved, overridden")] = (
        "pending"
    ),
    tenant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ListOf[dict[str, Any]]:
    """The queue, oldest first: metadata only (the content is read one answer at a time)."""
    db, scope = app_state(request).db, _scope(principal)
    status = status or None
    rows = await to_thread.run_sync(lambda: review.list_reviews(db, scope, status, tenant, limit))
    query = {"status": status, "tenant": tenant, "limit": limit}
    await audited_read(request, "reviews", query, len(rows))
    return ListOf[dict[str, Any]](data=[r.as_dict() for r in rows])


@router.get("/reviews/{request_id}")
async def show_review(
    request_id: str, request: Request, principal: Principal = Reviewer
) -> dict[str, Any]:
    """One answer under review, with its content as the tenant's content policy allows."""
    state = app_state(request)
    info = await to_thread.run_sync(review.get_review, state.db, request_id, _scope(principal))
    view = await to_thread.run_sync(content_view, state.db, state.vault, info)
    shown = sum(text is not None for text in (view.prompt, view.answer))
    # Recorded before the content goes out, with how many parts it shows.
    await audited_read(request, "review.content", {"request_id": request_id}, shown)
    return {**info.as_dict(), "content": view.as_dict()}


async def _decide(
    request: Request, principal: Principal, request_id: str, decision: str, note: str | None
) -> dict[str, Any]:
    state = app_state(request)

    def write(kind: str, fields: dict[str, Any], rid: str) -> None:
        state.audit.append(kind, fields, rid).result()

    info = await to_thread.run_sync(
        lambda: review.decide(
            state.db, write, actor(request), request_id, decision, note, _scope(principal)
        )
    )
    return info.as_dict()


@router.post("/reviews/{request_id}/approve")
async def approve(
    request_id: str, request: Request, body: Decision | None = None, principal: Principal = Reviewer
) -> dict[str, Any]:
    """Approve: a held answer may now be fetched by its client; a sampled one is confirmed."""
    note = body.note if body is not None else None
    return await _decide(request, principal, request_id, "approve", note)


@router.post("/reviews/{request_id}/override")
async def override(
    request_id: str, body: Decision, request: Request, principal: Principal = Reviewer
) -> dict[str, Any]:
    """Disregard the answer, with a note saying why: a held one is never delivered."""
    return await _decide(request, principal, request_id, "override", body.note)
