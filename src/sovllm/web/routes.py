"""Routes of the web front end: the two pages, their static files, and `GET /v1/me`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from sovllm.api.auth import ANY_ROLE, require
from sovllm.api.errors import APIError
from sovllm.api.state import app_state
from sovllm.governance.identity import Limits, Principal

STATIC = Path(__file__).parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
router = APIRouter()


def _file(path: Path, cache: str = "no-cache") -> FileResponse:
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": cache})


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def chat_page() -> FileResponse:
    return _file(STATIC / "index.html", "no-store")


@router.api_route("/admin", methods=["GET", "HEAD"], include_in_schema=False)
async def admin_console() -> FileResponse:
    return _file(STATIC / "admin.html", "no-store")


@router.api_route("/static/{name:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in TYPES:
        raise APIError(404, f"no static file {name!r}", "not_found_error")
    return _file(path)


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
    key_limits: LimitsOut
    tenant_limits: LimitsOut


def _limits(lim: Limits) -> LimitsOut:
    return LimitsOut(
        rpm=lim.rpm, tpm=lim.tpm, max_concurrent=lim.max_concurrent,
        monthly_tokens=lim.monthly_tokens,
    )  # fmt: skip


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
        key_limits=_limits(principal.key_limits),
        tenant_limits=_limits(principal.tenant_limits),
    )
