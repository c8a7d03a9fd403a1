"""Admin API under /admin/v1: tenants, keys, usage, audit, privacy, the pool and the stop switch.

Changes need the admin role; reading usage, the audit log and the pool also the auditor role.
Changes are `admin` entries in the audit log; reads of keys, usage, the log, stored content and
refused sign-ins are `access.read` entries (`_read`), durable before the data goes out. The
polled status routes (pool, stops, the last verification) are not: they hold no personal data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Generic, Literal, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sovllm.api.auth import ADMIN_ROLES, AUDIT_ROLES, require
from sovllm.api.errors import APIError
from sovllm.api.state import app_state
from sovllm.governance import identity as idn
from sovllm.governance import oversight
from sovllm.governance.access import READ, actor_of, logged_denials, read_entry
from sovllm.governance.audit import verify as audit_verify
from sovllm.governance.audit.checkpoint import CheckpointError
from sovllm.governance.privacy import erasure
from sovllm.governance.privacy.content import set_masking, set_policy
from sovllm.governance.usage import usage as usage_rows

T = TypeVar("T")

router = APIRouter(prefix="/admin/v1", tags=["admin"])
Admin = Depends(require(ADMIN_ROLES))
Auditor = Depends(require(AUDIT_ROLES))

Count = Annotated[int | None, Field(None, ge=0, le=idn.MAX_LIMIT)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsIn(_Body):
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


class TenantCreate(LimitsIn):
    name: str = Field(min_length=1, max_length=64)
    weight: float = Field(1.0, gt=0)
    content_policy: Policy = Field(
        "none", description="What of prompts and answers is kept (encrypted per subject)."
    )
    mask_prompts: bool = Field(
        False, description="Mask personal data before prompts reach the model."
    )


class TenantUpdate(LimitsIn):
    weight: float | None = Field(None, gt=0)
    content_policy: Policy | None = None
    mask_prompts: bool | None = None


class EraseRequest(_Body):
    subject: str = Field(
        min_length=1, max_length=256,
        description="The `user` value the subject's requests carried, or key:<key id>.",
    )  # fmt: skip


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


class ListOf(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]


def _tenant(t: idn.TenantInfo) -> TenantOut:
    return TenantOut(
        id=t.id, name=t.name, created_at=t.created_at, weight=t.weight,
        limits=_limits(t.limits), active_keys=t.active_keys, content_policy=t.content_policy,
        mask_prompts=t.mask_prompts,
    )  # fmt: skip


def _key(k: idn.KeyInfo) -> KeyOut:
    return KeyOut(
        id=k.id, tenant=k.tenant, role=k.role, prefix=k.prefix, name=k.name,
        created_at=k.created_at, expires_at=k.expires_at, revoked_at=k.revoked_at,
        active=k.active, limits=_limits(k.limits),
    )  # fmt: skip


async def _record(request: Request, action: str, target: dict[str, object]) -> None:
    """An admin action's audit entry, durable before the answer goes out."""
    fields = {"actor": actor_of(request.state.principal), "action": action, "target": target}
    await asyncio.wrap_future(app_state(request).audit.append("admin", fields))


async def _read(request: Request, resource: str, query: Mapping[str, object], count: int) -> None:
    """An audited read (`access.read`), durable before the data goes out: if the log cannot
    record who read it, nobody reads it."""
    fields = read_entry(actor_of(request.state.principal), resource, query, count)
    await asyncio.wrap_future(app_state(request).audit.append(READ, fields))


def _bad(exc: idn.IdentityError) -> APIError:
    status = 404 if "does not exist" in str(exc) else 409 if "already exists" in str(exc) else 400
    return APIError(status, str(exc))


@router.get("/tenants", dependencies=[Admin])
async def list_tenants(request: Request) -> ListOf[TenantOut]:
    rows = await to_thread.run_sync(idn.list_tenants, app_state(request).db)
    return ListOf[TenantOut](data=[_tenant(t) for t in rows])


@router.post("/tenants", status_code=201, dependencies=[Admin])
async def create_tenant(body: TenantCreate, request: Request) -> TenantOut:
    db = app_state(request).db
    try:
        t = await to_thread.run_sync(
            idn.create_tenant, db, body.name, body.to_limits(), body.weight,
            body.content_policy, body.mask_prompts,
        )  # fmt: skip
    except idn.IdentityError as exc:
        raise _bad(exc) from None
    await _record(request, "tenant.create", body.model_dump())
    return _tenant(t)


@router.patch("/tenants/{name}", dependencies=[Admin])
async def update_tenant(name: str, body: TenantUpdate, request: Request) -> TenantOut:
    db = app_state(request).db
    try:
        await to_thread.run_sync(idn.update_tenant, db, name, body.changes(), body.weight)
        if body.content_policy is not None:
            await to_thread.run_sync(set_policy, db, name, body.content_policy)
        if body.mask_prompts is not None:
            await to_thread.run_sync(set_masking, db, name, body.mask_prompts)
        t = await to_thread.run_sync(idn.update_tenant, db, name)
    except idn.IdentityError as exc:
        raise _bad(exc) from None
    await _record(request, "tenant.update",
                  {"name": name, **body.model_dump(exclude_unset=True)})  # fmt: skip
    return _tenant(t)


@router.delete("/tenants/{name}", dependencies=[Admin])
async def delete_tenant(name: str, request: Request, force: bool = False) -> dict[str, object]:
    db = app_state(request).db
    try:
        revoked = await to_thread.run_sync(idn.delete_tenant, db, name, force)
    except idn.IdentityError as exc:
        raise APIError(409 if "live key" in str(exc) else 404, str(exc)) from None
    await _record(request, "tenant.delete", {"name": name, "force": force, "revoked": revoked})
    return {"deleted": name, "revoked_keys": revoked}


@router.get("/keys", dependencies=[Admin])
async def list_keys(request: Request, tenant: str | None = None) -> ListOf[KeyOut]:
    try:
        rows = await to_thread.run_sync(idn.list_keys, app_state(request).db, tenant)
    except idn.IdentityError as exc:
        raise _bad(exc) from None
    await _read(request, "keys", {"tenant": tenant}, len(rows))
    return ListOf[KeyOut](data=[_key(k) for k in rows])


@router.post("/keys", status_code=201, dependencies=[Admin])
async def create_key(body: KeyCreate, request: Request) -> KeyCreated:
    db = app_state(request).db
    expires = body.expires_at.timestamp() if body.expires_at is not None else None
    try:
        raw, info = await to_thread.run_sync(
            lambda: idn.create_key(db, body.tenant, body.role, body.to_limits(), expires, body.name)
        )
    except idn.IdentityError as exc:
        raise _bad(exc) from None
    # The key itself never enters the log: only its id and visible prefix.
    await _record(request, "key.create", {"key_id": info.id, "prefix": info.prefix,
                                          "tenant": info.tenant, "role": info.role})  # fmt: skip
    return KeyCreated(key=raw, **_key(info).model_dump())


@router.patch("/keys/{key_id}", dependencies=[Admin])
async def update_key(key_id: str, body: LimitsIn, request: Request) -> KeyOut:
    db = app_state(request).db
    try:
        info = await to_thread.run_sync(idn.update_key_limits, db, key_id, body.changes())
    except idn.IdentityError as exc:
        raise _bad(exc) from None
    await _record(request, "key.update", {"key_id": key_id, **body.model_dump(exclude_unset=True)})
    return _key(info)


@router.post("/keys/{key_id}/revoke", dependencies=[Admin])
async def revoke_key(key_id: str, request: Request) -> KeyOut:
    try:
        info = await to_thread.run_sync(idn.revoke_key, app_state(request).db, key_id)
    except idn.IdentityError as exc:
        raise _bad(exc) from None
    await _record(request, "key.revoke", {"key_id": key_id})
    return _key(info)


@router.get("/usage", dependencies=[Auditor])
async def get_usage(
    request: Request,
    tenant: str | None = None,
    since: Annotated[dt.date | None, Query(description="First day, YYYY-MM-DD.")] = None,
) -> ListOf[UsageOut]:
    rows = await to_thread.run_sync(usage_rows, app_state(request).db, tenant, since)
    day = since.isoformat() if since else None
    await _read(request, "usage", {"tenant": tenant, "since": day}, len(rows))
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


@router.post("/privacy/erase", dependencies=[Auditor])
async def erase_subject(body: EraseRequest, request: Request) -> dict[str, object]:
    """Crypto-shred a data subject's stored content; returns a signed erasure receipt."""
    state = app_state(request)
    actor: idn.Principal = request.state.principal
    who = actor_of(actor)
    try:
        return await to_thread.run_sync(erasure.erase, state.vault, state.audit, body.subject, who)
    except (erasure.ErasureError, CheckpointError) as exc:  # nothing erased: say why
        raise APIError(409, str(exc)) from None


@router.get("/audit/content/{request_id}", dependencies=[Auditor])
async def read_content(request_id: str, request: Request) -> dict[str, object]:
    """What the tenant's content policy kept of a request; null where the subject was erased."""
    rows = await to_thread.run_sync(app_state(request).vault.read, request_id)
    # Decrypted content: the attempt is recorded even when nothing was kept.
    await _read(request, "content", {"request_id": request_id}, len(rows))
    if not rows:
        raise APIError(404, f"no stored content for request {request_id!r} (policy none?)")
    return {"request_id": request_id,
            "parts": [{"part": c.part, "policy": c.policy, "text": c.text} for c in rows]}  # fmt: skip


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
        lambda: audit_verify.search(
            app_state(request).db, request_id, tenant, ts(since), ts(until), limit
        )
    )
    query = {"request_id": request_id, "tenant": tenant, "limit": limit,
             "since": since.isoformat() if since else None,
             "until": until.isoformat() if until else None}  # fmt: skip
    await _read(request, "audit.entries", query, len(rows))
    return ListOf[dict[str, object]](data=rows)


@router.post("/audit/verify", dependencies=[Auditor])
async def audit_verify_now(request: Request) -> dict[str, object]:
    """Verify the whole log now (the console's "verify now"); the result joins the log."""
    state = app_state(request)
    report = await to_thread.run_sync(
        audit_verify.verify_database, state.db, state.audit.signer.verifier
    )
    actor: idn.Principal = request.state.principal
    result = {"ok": report.ok, "size": report.size, "checkpoints": report.checkpoints,
              "first_bad_entry": report.first_bad,
              "first_bad_checkpoint": report.first_bad_checkpoint, "pruned": report.pruned,
              "problems": report.problems[:20],
              "summary": report.summary()}  # fmt: skip
    fields = {"actor": actor_of(actor), "result": result}
    await asyncio.wrap_future(state.audit.append("audit.verify", fields))
    return {**result, "problems": report.problems, "verified_at": _now_iso(),
            "actor": fields["actor"]}  # fmt: skip


@router.get("/audit/verify/last", dependencies=[Auditor])
async def audit_last_verification(request: Request) -> dict[str, object]:
    """The most recent verification run from this service, by whom and when (404: none yet)."""
    entry = await to_thread.run_sync(audit_verify.latest_of_kind, app_state(request).db,
                                     "audit.verify")  # fmt: skip
    if entry is None:
        raise APIError(404, "the audit log has not been verified from this service yet")
    result = entry.get("result")
    return {**(result if isinstance(result, dict) else {}), "verified_at": entry.get("time"),
            "actor": entry.get("actor")}  # fmt: skip


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@router.get("/audit/checkpoint", dependencies=[Auditor])
async def latest_checkpoint(request: Request) -> dict[str, object]:
    """The latest signed checkpoint (C2SP note) and the verifier key."""
    audit = app_state(request).audit
    note = await to_thread.run_sync(audit.latest_note)
    if note is None:
        note = await to_thread.run_sync(audit.checkpoint)
    await _read(request, "audit.checkpoint", {}, 1)
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
    await _read(request, "access.denied", {"limit": limit}, len(rows))
    return ListOf[dict[str, object]](data=rows)


# -- the replica pool and the stop switch (issue #6) -------------------------------------


@router.get("/pool", dependencies=[Auditor])
async def pool_status(request: Request) -> dict[str, object]:
    """Each replica's health and load, and each model's queue depth."""
    pool = app_state(request).pool
    return {
        "policy": pool.settings.policy,
        "queue_depth": pool.stats().waiting,
        "models": {name: {"queue_depth": pool.stats(name).waiting} for name in pool.model_ids},
        "replicas": [r.describe() for r in pool.replicas],
    }


class StopIn(_Body):
    scope: Literal["all", "model", "tenant"] = "all"
    target: str | None = Field(None, max_length=128, description="The model or tenant.")
    mode: Literal["drain", "cut"] | None = Field(
        None, description="drain: requests in flight finish; cut: they end within a second."
    )
    reason: str = Field("", max_length=500)


class ResumeIn(_Body):
    scope: Literal["all", "model", "tenant"] = "all"
    target: str | None = Field(None, max_length=128)


def _target(scope: str, target: str | None) -> str:
    if scope == "all":
        if target:
            raise APIError(400, "a stop of scope 'all' takes no target", param="target")
        return ""
    if not target:
        raise APIError(400, f"a stop of scope '{scope}' needs the {scope}'s name", param="target")
    return target


@router.get("/stops", dependencies=[Auditor])
async def get_stops(request: Request) -> ListOf[dict[str, object]]:
    stops = await to_thread.run_sync(oversight.list_stops, app_state(request).db)
    return ListOf[dict[str, object]](data=[s.as_dict() for s in stops])


@router.post("/stop", dependencies=[Admin])
async def stop(body: StopIn, request: Request) -> dict[str, object]:
    """Halt everything, a model or a tenant (AI Act Art. 14(4)(e)); recorded with its actor."""
    state = app_state(request)
    target = _target(body.scope, body.target)
    if body.scope == "model" and target not in state.pool.model_ids:
        raise APIError(404, f"no model '{target}'; served: {', '.join(state.pool.model_ids)}",
                       param="target")  # fmt: skip
    actor: idn.Principal = request.state.principal
    who: dict[str, object] = {**actor_of(actor)}
    mode = body.mode or state.settings.stop_mode
    made = oversight.new_stop(body.scope, target, mode, body.reason, who)
    # Durable in the audit log before anything is cut or refused on its account.
    await asyncio.wrap_future(state.audit.append("oversight.stop", made.as_dict()))
    await to_thread.run_sync(oversight.save_stop, state.db, made)
    state.oversight.apply(await to_thread.run_sync(state.oversight.refresh))
    return made.as_dict()


@router.post("/resume", dependencies=[Admin])
async def resume(body: ResumeIn, request: Request) -> dict[str, object]:
    state = app_state(request)
    target = _target(body.scope, body.target)
    if not await to_thread.run_sync(oversight.is_stopped, state.db, body.scope, target):
        raise APIError(404, f"{body.scope} {target!r} is not stopped".replace(" ''", ""))
    actor: idn.Principal = request.state.principal
    who = actor_of(actor)
    fields = {"scope": body.scope, "target": target or None, "actor": who}
    await asyncio.wrap_future(state.audit.append("oversight.resume", fields))
    await to_thread.run_sync(oversight.remove_stop, state.db, body.scope, target)
    state.oversight.apply(await to_thread.run_sync(state.oversight.refresh))
    return {"resumed": True, "scope": body.scope, "target": target or None}
