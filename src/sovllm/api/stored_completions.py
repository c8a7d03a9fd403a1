"""Answers under human review in OpenAI's stored-completion shape (docs/oversight.md).

A tenant whose review policy is `hold` gets, for a non-streamed chat request, `202 Accepted`
and a `chat.completion` with no choices and `sovllm_review.status: "pending"`: the answer
itself stays sealed on the server. `GET /v1/chat/completions/{id}` (OpenAI's retrieval of a
stored completion) answers the key that asked, and only that key (any other: 404): still
pending, the approved answer (handed over once, then deleted), or the reviewer's override. It
also shows a sampled answer's review, so a client learns that an answer it already has was
disregarded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from sovllm.api.auth import INFERENCE_ROLES, require
from sovllm.api.state import app_state
from sovllm.governance import review
from sovllm.governance.audit import operations, records
from sovllm.governance.identity import Principal

router = APIRouter()
REVIEW_HEADER = "x-sovllm-review"


def _retrieve(request_id: str) -> str:
    return f"/v1/chat/completions/{request_id}"


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat() if ts is not None else None


def held_response(body: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
    """The answer to a held request: the completion without its choices, and how to fetch it."""
    request_id = str(body["id"])
    body["sovllm_review"] = {
        "status": "pending",
        "mode": "hold",
        "retrieve": _retrieve(request_id),
        "message": (
            "This answer is held for human review (the tenant's review policy is hold) and has "
            f"not been delivered. Fetch it with GET {_retrieve(request_id)} once a reviewer "
            "approved it."
        ),
    }
    return JSONResponse(body, status_code=202, headers={**headers, REVIEW_HEADER: "pending"})


def _message(d: review.Delivery) -> str:
    info = d.info
    if info.status == "overridden":
        return f"A human reviewer disregarded this answer: do not use it. Note: {info.note}"
    if info.status == "pending":
        if info.mode == "hold":
            return "This answer is held for human review and has not been delivered yet."
        return "This answer was delivered and drawn for human review; no decision yet."
    if info.mode == "sample":
        return "A human reviewer confirmed this answer."
    if d.text is not None:
        return "A human reviewer approved this answer."
    if info.delivered_at is None:  # held, approved, and its copy gone undelivered: erased
        return (
            "A human reviewer approved this answer, but it was erased at its data subject's "
            "request before it was delivered: it cannot be shown."
        )
    when = _iso(info.delivered_at) or "an earlier request"
    return (
        f"A human reviewer approved this answer; it was delivered at {when} and is not kept "
        "after delivery."
    )


def review_status(d: review.Delivery) -> dict[str, Any]:
    info = d.info
    return {
        "status": info.status,
        "mode": info.mode,
        "queued_at": _iso(info.queued_at),
        "decided_at": _iso(info.decided_at),
        "delivered_at": _iso(info.delivered_at),
        "note": info.note if info.status == "overridden" else None,
        "retrieve": _retrieve(info.request_id),
        "message": _message(d),
    }


def completion_body(d: review.Delivery) -> dict[str, Any]:
    info = d.info
    chat = info.route != "/v1/completions"
    choices: list[dict[str, Any]] = []
    if not (info.status == "pending" and info.mode == "hold"):
        choice: dict[str, Any] = {"index": 0, "finish_reason": info.finish_reason}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": d.text}
            if info.status == "overridden":
                message["refusal"] = f"Disregarded by a human reviewer: {info.note}"
            choice["message"] = message
        else:
            choice["text"] = d.text
        choices.append(choice)
    tokens = (info.prompt_tokens, info.completion_tokens)
    return {
        "id": info.request_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": info.created,
        "model": info.model,
        "system_fingerprint": info.weights_sha256,
        "choices": choices,
        "usage": {
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "total_tokens": sum(tokens),
        },
        "provenance": {  # AI Act Art. 50(2), as on the answer itself
            "ai_generated": True,
            "model": info.model,
            "weights_sha256": info.weights_sha256,
            "request_id": info.request_id,
            "created": info.created,
        },
        "sovllm_review": review_status(d),
    }


@router.get("/v1/chat/completions/{completion_id}")
async def get_completion(
    completion_id: str,
    request: Request,
    principal: Principal = Depends(require(INFERENCE_ROLES)),
) -> JSONResponse:
    """A stored (reviewed) completion, for the key that asked for it."""
    state = app_state(request)
    delivery = await to_thread.run_sync(
        review.for_owner, state.db, state.vault, completion_id, principal.key_id
    )
    if delivery.first:
        fields = operations.review_delivered(principal.actor(), "deleted")
        entry = state.audit.append(records.REVIEW_DELIVERED, fields, completion_id)
        await asyncio.wrap_future(entry)
    headers = {
        "x-request-id": completion_id,
        "x-sovllm-ai-generated": "true",  # openai_routes.AI_GENERATED_HEADER
        REVIEW_HEADER: delivery.info.status,
    }
    return JSONResponse(completion_body(delivery), headers=headers)
