"""Admin API under /admin/v1: tenants, keys and usage (the audit log, erasure and refused
sign-ins are audit_routes.py; the pool and the stop switch oversight_routes.py).

Changes need the admin role, reading usage also the auditor role. Each change is
`governance.tenancy`'s, which records it as an `admin` entry in the audit log before the answer
goes out; reads of keys and usage are `access.read` entries, durable before the data goes out.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

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
from sovllm.governance import identity as idn
from sovllm.governance import tenancy, tenants
from sovllm.governance.usage import usage as usage_rows

router = APIRouter(prefix=PREFIX, tags=["admin"])

Count = Annotated[int | None, Field(None, ge=0, le=idn.MAX_LIMIT)]


class LimitsIn(Body):
    rpm: Count = None
    tpm: Count = None
    max_concurrent: Count = None
    monthly_tokens: Count = None

    def to_limits(self) -> idn.Limits:
        return idn.Limits(self.rpm, self.tpm, self.max_concurrent, self.monthly_tokens)

    def changes(self) -> dict[str, int | None]:
        """The limits this request names (null removes one); for PATCH, nothing else changes."""
        return {n: getattr(self, n) for n in idn.LIMIT_NAMES if n in self.model_fields_set}


class LimitsOut(BaseModel):
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    monthly_tokens: int | None


def _limits(lim: idn.Limits) -> LimitsOut:
    return LimitsOut(
        rpm=lim.rpm,
        tpm=lim.tpm,
        max_concurrent=lim.max_concurrent,
        monthly_tokens=lim.monthly_tokens,
    )


Policy = Literal["none", "redacted", "full"]
REVIEW_POLICY = (
    "Human review of answers: none, sample:P (P% of answers reviewed after delivery) or hold "
    "(answers held until a reviewer approves them; docs/oversight.md)."
)


class TenantCreate(LimitsIn):
    name: str = Field(min_length=1, max_length=64)
    weight: float = Field(1.0, gt=0)
    content_policy: Policy = Field(
        "none", description="What of prompts and answers is kept (encrypted per subject)."
    )
    mask_prompts: bool = Field(
        False, description="Mask personal data before prompts reach the model."
    )
    review_policy: str = Field("none", max_length=16, description=REVIEW_POLICY)


class TenantUpdate(LimitsIn):
    weight: float | None = Field(None, gt=0)
    content_policy: Policy | None = None
    mask_prompts: bool | None = None
    review_policy: str | None = Field(None, max_length=16, description=REVIEW_POLICY)


class TenantOut(BaseModel):
    object: Literal["tenant"] = "tenant"
    id: int
    name: str
    created_at: float
    weight: float
    limits: LimitsOut
    active_keys: int
    content_policy: str
    mask_prompts: bool
    review_policy: str


class KeyCreate(LimitsIn):
    tenant: str = Field(min_length=1)
    role: idn.Role
    name: str | None = Field(None, max_length=128)
    expires_at: dt.datetime | None = None


class KeyOut(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    tenant: str
    role: str
    prefix: str
    name: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    active: bool
    limits: LimitsOut


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself. Shown once: it is stored only as a hash.")


class UsageOut(BaseModel):
    day: str
    tenant: str
    key_id: str
    key_prefix: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def _tenant(t: idn.TenantInfo) -> TenantOut:
    return TenantOut(
        id=t.id,
        name=t.name,
        created_at=t.created_at,
        weight=t.weight,
        limits=_limits(t.limits),
        active_keys=t.active_keys,
        content_policy=t.content_policy,
        mask_prompts=t.mask_prompts,
        review_policy=t.review_policy,
    )


def _key(k: idn.KeyInfo) -> KeyOut:
    return KeyOut(
        id=k.id,
        tenant=k.tenant,
        role=k.role,
        prefix=k.prefix,
        name=k.name,
        created_at=k.created_at,
        expires_at=k.expires_at,
        revoked_at=k.revoked_at,
        active=k.active,
        limits=_limits(k.limits),
    )


@router.get("/tenants", dependencies=[Admin])
async def list_tenants(request: Request) -> ListOf[TenantOut]:
    rows = await to_thread.run_sync(tenants.list_tenants, app_state(request).db)
    return ListOf[TenantOut](data=[_tenant(t) for t in rows])


@router.post("/tenants", status_code=201, dependencies=[Admin])
async def create_tenant(body: TenantCreate, request: Request) -> TenantOut:
    state = app_state(request)
    new = tenancy.NewTenant(
        body.name,
        body.to_limits(),
        body.weight,
        body.content_policy,
        body.mask_prompts,
        body.review_policy,
    )
    t = await to_thread.run_sync(
        tenancy.create_tenant, state.db, writer(state), actor(request), new
    )
    return _tenant(t)


@router.patch("/tenants/{name}", dependencies=[Admin])
async def update_tenant(name: str, body: TenantUpdate, request: Request) -> TenantOut:
    state = app_state(request)
    change = tenancy.TenantChange(
        name,
        body.changes(),
        body.weight,
        body.content_policy,
        body.mask_prompts,
        body.review_policy,
    )
    t = await to_thread.run_sync(
        tenancy.update_tenant, state.db, writer(state), actor(request), change
    )
    return _tenant(t)


@router.delete("/tenants/{name}", dependencies=[Admin])
async def delete_tenant(name: str, request: Request, force: bool = False) -> dict[str, object]:
    state = app_state(request)
    revoked = await to_thread.run_sync(
        tenancy.delete_tenant, state.db, writer(state), actor(request), name, force
    )
    return {"deleted": name, "revoked_keys": revoked}


@router.get("/keys", dependencies=[Admin])
async def list_keys(request: Request, tenant: str | None = None) -> ListOf[KeyOut]:
    rows = await to_thread.run_sync(tenants.list_keys, app_state(request).db, tenant)
    await audited_read(request, "keys", {"tenant": tenant}, len(rows))
    return ListOf[KeyOut](data=[_key(k) for k in rows])


@router.post("/keys", status_code=201, dependencies=[Admin])
async def create_key(body: KeyCreate, request: Request) -> KeyCreated:
    state = app_state(request)
    expires = body.expires_at.timestamp() if body.expires_at is not None else None
    new = tenancy.NewKey(body.tenant, body.role, body.to_limits(), expires, body.name)
    raw, info = await to_thread.run_sync(
        tenancy.create_key, state.db, writer(state), actor(request), new
    )
    return KeyCreated(key=raw, **_key(info).model_dump())


@router.patch("/keys/{key_id}", dependencies=[Admin])
async def update_key(key_id: str, body: LimitsIn, request: Request) -> KeyOut:
    state = app_state(request)
    info = await to_thread.run_sync(
        tenancy.update_key, state.db, writer(state), actor(request), key_id, body.changes()
    )
    return _key(info)


@router.post("/keys/{key_id}/revoke", dependencies=[Admin])
async def revoke_key(key_id: str, request: Request) -> KeyOut:
    state = app_state(request)
    info = await to_thread.run_sync(
        tenancy.revoke_key, state.db, writer(state), actor(request), key_id
    )
    return _key(info)


@router.get("/usage", dependencies=[Auditor])
async def get_usage(
    request: Request,
    tenant: str | None = None,
    since: Annotated[dt.date | None, Query(description="First day, YYYY-MM-DD.")] = None,
) -> ListOf[UsageOut]:
    rows = await to_thread.run_sync(usage_rows, app_state(request).db, tenant, since)
    day = since.isoformat() if since else None
    await audited_read(request, "usage", {"tenant": tenant, "since": day}, len(rows))
    return ListOf[UsageOut](
        data=[
            UsageOut(
                day=r.day,
                tenant=r.tenant,
                key_id=r.key_id,
                key_prefix=r.key_prefix,
                requests=r.requests,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                total_tokens=r.total_tokens,
            )
            for r in rows
        ]
    )
