"""`GET /v1/me`: the caller's own tenant, role and limits (the chat page and console read it)."""

from __future__ import annotations

from typing import Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from sovllm.api.auth import ANY_ROLE, require
from sovllm.api.state import app_state
from sovllm.governance.identity import Limits, Principal

router = APIRouter()


class LimitsOut(BaseModel):
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    monthly_tokens: int | None


class Me(BaseModel):
    object: Literal["principal"] = "principal"
    key_id: str
    tenant: str
    role: str
    content_policy: str
    """none, redacted or full: what the service keeps of prompts and answers for this tenant (encrypted per subject)."""
    content_retention_days: int
    mask_prompts: bool
    review_policy: str
    """none, sample:P or hold: human review of this tenant's answers (docs/oversight.md)."""
    key_limits: LimitsOut
    tenant_limits: LimitsOut


def _limits(lim: Limits) -> LimitsOut:
    return LimitsOut(
        rpm=lim.rpm,
        tpm=lim.tpm,
        max_concurrent=lim.max_concurrent,
        monthly_tokens=lim.monthly_tokens,
    )


@router.get("/v1/me", tags=["web"])
async def who_am_i(request: Request, principal: Principal = Depends(require(ANY_ROLE))) -> Me:
    """The caller's tenant, role and limits, and what the tenant's content policy keeps."""
    state = app_state(request)
    policy = await to_thread.run_sync(state.vault.policy_of, principal.tenant_id)
    return Me(
        key_id=principal.key_id,
        tenant=principal.tenant,
        role=principal.role.value,
        content_policy=policy,
        content_retention_days=state.settings.retention.content_days,
        mask_prompts=principal.mask_prompts,
        review_policy=principal.review_policy,
        key_limits=_limits(principal.key_limits),
        tenant_limits=_limits(principal.tenant_limits),
    )
