"""The tenants and their API keys: create, list, change, revoke and delete them.

Each change also has a `check_*` that reads, and raises what the change would raise, without
changing anything: tenancy.py checks, records the change in the audit log, and only then makes
it. A key is shown once and stored only as its SHA-256 (identity.py).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sovllm.governance.identity import (
    KEY_PREFIX,
    LIMIT_NAMES,
    MAX_LIMIT,
    AlreadyExists,
    HasLiveKeys,
    IdentityError,
    KeyInfo,
    Limits,
    NotFound,
    Role,
    TenantInfo,
    hash_key,
    new_secret,
)
from sovllm.store.db import Database
from sovllm.store.schema import ApiKey, Tenant

TENANT_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _limits_of(row: Tenant | ApiKey) -> Limits:
    return Limits(row.rpm, row.tpm, row.max_concurrent, row.monthly_tokens)


def _validate_limits(limits: Limits) -> None:
    for name in LIMIT_NAMES:
        value = getattr(limits, name)
        if value is not None and not 0 <= value <= MAX_LIMIT:
            raise IdentityError(f"{name} must be between 0 and {MAX_LIMIT}, got {value}")


def _validate_new_tenant(name: str, limits: Limits, weight: float) -> None:
    _validate_tenant_name(name)
    _validate_limits(limits)
    _validate_weight(weight)


def _validate_weight(weight: float | None) -> None:
    if weight is not None and not weight > 0:
        raise IdentityError(f"weight must be positive, got {weight}")


def _validate_tenant_name(name: str) -> None:
    if not 1 <= len(name) <= 64 or not set(name) <= TENANT_NAME_CHARS:
        raise IdentityError(
            f"tenant name {name!r} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"
        )


# -- tenants -------------------------------------------------------------------------------


def create_tenant(
    db: Database,
    name: str,
    limits: Limits = Limits(),
    weight: float = 1.0,
    content_policy: str = "none",
    mask_prompts: bool = False,
    review_policy: str = "none",
) -> TenantInfo:
    _validate_new_tenant(name, limits, weight)
    try:
        with db.transaction() as s:
            row = Tenant(
                name=name,
                created_at=time.time(),
                weight=weight,
                rpm=limits.rpm,
                tpm=limits.tpm,
                max_concurrent=limits.max_concurrent,
                monthly_tokens=limits.monthly_tokens,
                content_policy=content_policy,
                mask_prompts=mask_prompts,
                review_policy=review_policy,
            )
            s.add(row)
            s.flush()
            return _tenant_info(row, 0)
    except IntegrityError:
        raise AlreadyExists(f"tenant {name!r} already exists") from None


def _tenant_row(s: Session, name: str) -> Tenant:
    row = s.scalar(select(Tenant).where(Tenant.name == name))
    if row is None:
        raise NotFound(f"tenant {name!r} does not exist")
    return row


def _active_key_filter(now: float) -> tuple[object, ...]:
    return (
        ApiKey.revoked_at.is_(None),
        (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
    )


def list_tenants(db: Database) -> list[TenantInfo]:
    now = time.time()
    with db.transaction() as s:
        counts = dict(
            s.execute(
                select(ApiKey.tenant_id, func.count())
                .where(*_active_key_filter(now))  # type: ignore[arg-type]
                .group_by(ApiKey.tenant_id)
            ).all()
        )
        return [
            _tenant_info(t, counts.get(t.id, 0))
            for t in s.scalars(select(Tenant).order_by(Tenant.name))
        ]


def _tenant_info(row: Tenant, active_keys: int) -> TenantInfo:
    policy = row.content_policy or "none"
    limits = _limits_of(row)
    return TenantInfo(
        row.id,
        row.name,
        row.created_at,
        row.weight,
        limits,
        active_keys,
        policy,
        row.mask_prompts,
        row.review_policy or "none",
    )


def _check_limits(row: Tenant | ApiKey, changes: Mapping[str, int | None]) -> None:
    unknown = set(changes) - set(LIMIT_NAMES)
    if unknown:
        raise IdentityError(f"unknown limit {sorted(unknown)[0]!r}")
    _validate_limits(dataclasses.replace(_limits_of(row), **changes))


def _change_limits(row: Tenant | ApiKey, changes: Mapping[str, int | None]) -> None:
    """Set the limits named in `changes` (None removes one); leave the others as they are."""
    _check_limits(row, changes)
    for name, value in changes.items():
        setattr(row, name, value)


def update_tenant(
    db: Database,
    name: str,
    limits: Mapping[str, int | None] | None = None,
    weight: float | None = None,
) -> TenantInfo:
    """Change the limits named in `limits` and the weight, if given; keep everything else."""
    _validate_weight(weight)
    with db.transaction() as s:
        row = _tenant_row(s, name)
        if limits:
            _change_limits(row, limits)
        if weight is not None:
            row.weight = weight
        live = s.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.tenant_id == row.id, *_active_key_filter(time.time()))  # type: ignore[arg-type]
        )
        return _tenant_info(row, int(live or 0))


def delete_tenant(db: Database, name: str, force: bool = False) -> int:
    """Delete a tenant; refuse while it has live keys unless forced (which revokes them).

    Returns the number of keys revoked. Keys and usage rows stay for the record: a deleted
    tenant's keys are revoked, and the tenant row is renamed so the name can be reused.
    """
    now = time.time()
    with db.transaction() as s:
        row = _tenant_row(s, name)
        live = _live_keys(s, row, force, now)
        s.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == row.id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        row.name = f"{row.name}~deleted-{int(now)}-{row.id}"[:64]
        return live


def _live_keys(s: Session, row: Tenant, force: bool, now: float) -> int:
    """The tenant's live keys; HasLiveKeys if there are some and the delete is not forced."""
    live = s.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.tenant_id == row.id, *_active_key_filter(now))  # type: ignore[arg-type]
    )
    if live and not force:
        raise HasLiveKeys(
            f"tenant {row.name!r} has {live} live key(s); revoke them first or use --force"
        )
    return int(live or 0)


# -- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Minted:
    """A new key before it is stored: the key itself, its id and its visible prefix."""

    raw: str
    id: str
    prefix: str


def mint_key() -> Minted:
    raw = KEY_PREFIX + new_secret()
    return Minted(raw, "key_" + secrets.token_hex(8), raw[: len(KEY_PREFIX) + 4])


def _validate_new_key(limits: Limits, expires_at: float | None) -> None:
    _validate_limits(limits)
    if expires_at is not None and expires_at <= time.time():
        raise IdentityError("the expiry date is in the past")


def create_key(
    db: Database,
    tenant: str,
    role: Role,
    limits: Limits = Limits(),
    expires_at: float | None = None,
    name: str | None = None,
    minted: Minted | None = None,
) -> tuple[str, KeyInfo]:
    """Create a key (`minted`, or a new one); return the raw key (shown once, never stored)
    and its record."""
    _validate_new_key(limits, expires_at)
    key = minted or mint_key()
    raw, key_id, prefix = key.raw, key.id, key.prefix
    with db.transaction() as s:
        t = _tenant_row(s, tenant)
        row = ApiKey(
            id=key_id,
            tenant_id=t.id,
            role=role.value,
            key_hash=hash_key(raw),
            prefix=prefix,
            name=name,
            created_at=time.time(),
            expires_at=expires_at,
            revoked_at=None,
            rpm=limits.rpm,
            tpm=limits.tpm,
            max_concurrent=limits.max_concurrent,
            monthly_tokens=limits.monthly_tokens,
        )
        s.add(row)
        return raw, _key_info(row, t.name)


def _key_info(row: ApiKey, tenant: str) -> KeyInfo:
    r = row
    limits = _limits_of(r)
    return KeyInfo(
        r.id, tenant, r.role, r.prefix, r.name, r.created_at, r.expires_at, r.revoked_at, limits
    )


def list_keys(db: Database, tenant: str | None = None) -> list[KeyInfo]:
    with db.transaction() as s:
        q = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
        if tenant is not None:
            q = q.where(Tenant.id == _tenant_row(s, tenant).id)
        return [_key_info(k, t) for k, t in s.execute(q.order_by(ApiKey.created_at)).all()]


def _key_row(s: Session, key_id: str) -> tuple[ApiKey, str]:
    found = s.execute(
        select(ApiKey, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.id == key_id)
    ).first()
    if found is None:
        raise NotFound(f"key {key_id!r} does not exist")
    return found[0], found[1]


def revoke_key(db: Database, key_id: str) -> KeyInfo:
    with db.transaction() as s:
        row, tenant = _key_row(s, key_id)
        if row.revoked_at is None:
            row.revoked_at = time.time()
        return _key_info(row, tenant)


def update_key_limits(db: Database, key_id: str, limits: Mapping[str, int | None]) -> KeyInfo:
    """Change the limits named in `limits` (None removes one); keep the others."""
    with db.transaction() as s:
        row, tenant = _key_row(s, key_id)
        _change_limits(row, limits)
        return _key_info(row, tenant)


def count_keys(db: Database) -> int:
    with db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(ApiKey)) or 0)


# -- checks: what a change would refuse, read without changing anything --------------------


def check_new_tenant(db: Database, name: str, limits: Limits, weight: float) -> None:
    _validate_new_tenant(name, limits, weight)
    with db.read() as s:
        if s.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
            raise AlreadyExists(f"tenant {name!r} already exists")


def check_tenant_change(
    db: Database, name: str, limits: Mapping[str, int | None], weight: float | None
) -> None:
    _validate_weight(weight)
    with db.read() as s:
        _check_limits(_tenant_row(s, name), limits)


def check_delete(db: Database, name: str, force: bool) -> int:
    """How many live keys a delete of `name` would revoke."""
    with db.read() as s:
        return _live_keys(s, _tenant_row(s, name), force, time.time())


def check_new_key(db: Database, tenant: str, limits: Limits, expires_at: float | None) -> None:
    _validate_new_key(limits, expires_at)
    with db.read() as s:
        _tenant_row(s, tenant)


def check_key_change(db: Database, key_id: str, limits: Mapping[str, int | None]) -> None:
    with db.read() as s:
        _check_limits(_key_row(s, key_id)[0], limits)
