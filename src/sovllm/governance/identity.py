"""Who is calling: tenants, roles and API keys.

A key is shown once and stored only as its SHA-256. Keys carry 240 random bits, so a fast hash
is enough (as for GitHub or Stripe tokens); the lookup is by hash, and the final comparison is
constant-time.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sovllm.store.db import Database
from sovllm.store.schema import ApiKey, Tenant

KEY_PREFIX = "sk-sovllm-"
_SECRET_LEN = 40  # base62 characters: ~238 bits
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
MAX_LIMIT = 2**62
TENANT_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class Role(enum.StrEnum):
    USER = "user"
    AUDITOR = "auditor"
    ADMIN = "admin"


class IdentityError(Exception):
    """A management operation that cannot be done; the message says why."""


class AuthError(Exception):
    """The caller is not who they claim: 401. The message never contains the key.

    `reason` (missing, malformed, unknown, revoked, expired) is what the access log counts.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    monthly_tokens: int | None = None

    def is_empty(self) -> bool:
        return all(
            v is None for v in (self.rpm, self.tpm, self.max_concurrent, self.monthly_tokens)
        )


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant_id: int
    tenant: str
    role: Role
    key_limits: Limits
    tenant_limits: Limits
    tenant_weight: float
    mask_prompts: bool = False


@dataclass(frozen=True)
class KeyInfo:
    id: str
    tenant: str
    role: str
    prefix: str
    name: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    limits: Limits

    @property
    def active(self) -> bool:
        now = time.time()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class TenantInfo:
    id: int
    name: str
    created_at: float
    weight: float
    limits: Limits
    active_keys: int
    content_policy: str = "none"
    mask_prompts: bool = False


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _new_secret() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))


def _limits_of(row: Tenant | ApiKey) -> Limits:
    return Limits(row.rpm, row.tpm, row.max_concurrent, row.monthly_tokens)


LIMIT_NAMES = ("rpm", "tpm", "max_concurrent", "monthly_tokens")


def _validate_limits(limits: Limits) -> None:
    for name in LIMIT_NAMES:
        value = getattr(limits, name)
        if value is not None and not 0 <= value <= MAX_LIMIT:
            raise IdentityError(f"{name} must be between 0 and {MAX_LIMIT}, got {value}")


def _validate_tenant_name(name: str) -> None:
    if not 1 <= len(name) <= 64 or not set(name) <= TENANT_NAME_CHARS:
        raise IdentityError(
            f"tenant name {name!r} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"
        )


# -- tenants -------------------------------------------------------------------------------


def create_tenant(
    db: Database, name: str, limits: Limits = Limits(), weight: float = 1.0,
    content_policy: str = "none", mask_prompts: bool = False,
) -> TenantInfo:  # fmt: skip
    _validate_tenant_name(name)
    _validate_limits(limits)
    if not weight > 0:
        raise IdentityError(f"weight must be positive, got {weight}")
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
            )
            s.add(row)
            s.flush()
            return _tenant_info(row, 0)
    except IntegrityError:
        raise IdentityError(f"tenant {name!r} already exists") from None


def _tenant_row(s: Session, name: str) -> Tenant:
    row = s.scalar(select(Tenant).where(Tenant.name == name))
    if row is None:
        raise IdentityError(f"tenant {name!r} does not exist")
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
    return TenantInfo(row.id, row.name, row.created_at, row.weight, _limits_of(row), active_keys,
                      row.content_policy or "none", bool(row.mask_prompts))  # fmt: skip


def _change_limits(row: Tenant | ApiKey, changes: Mapping[str, int | None]) -> None:
    """Set the limits named in `changes` (None removes one); leave the others as they are."""
    unknown = set(changes) - set(LIMIT_NAMES)
    if unknown:
        raise IdentityError(f"unknown limit {sorted(unknown)[0]!r}")
    _validate_limits(dataclasses.replace(_limits_of(row), **changes))
    for name, value in changes.items():
        setattr(row, name, value)


def update_tenant(
    db: Database, name: str, limits: Mapping[str, int | None] | None = None,
    weight: float | None = None,
) -> TenantInfo:  # fmt: skip
    """Change the limits named in `limits` and the weight, if given; keep everything else."""
    if weight is not None and not weight > 0:
        raise IdentityError(f"weight must be positive, got {weight}")
    with db.transaction() as s:
        row = _tenant_row(s, name)
        if limits:
            _change_limits(row, limits)
        if weight is not None:
            row.weight = weight
        return _tenant_info(row, 0)


def delete_tenant(db: Database, name: str, force: bool = False) -> int:
    """Delete a tenant; refuse while it has live keys unless forced (which revokes them).

    Returns the number of keys revoked. Keys and usage rows stay for the record: a deleted
    tenant's keys are revoked, and the tenant row is renamed so the name can be reused.
    """
    now = time.time()
    with db.transaction() as s:
        row = _tenant_row(s, name)
        live = s.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.tenant_id == row.id, *_active_key_filter(now))  # type: ignore[arg-type]
        )
        if live and not force:
            raise IdentityError(
                f"tenant {name!r} has {live} live key(s); revoke them first or use --force"
            )
        s.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == row.id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        row.name = f"{row.name}~deleted-{int(now)}-{row.id}"[:64]
        return int(live or 0)


# -- keys ----------------------------------------------------------------------------------


def create_key(
    db: Database,
    tenant: str,
    role: Role,
    limits: Limits = Limits(),
    expires_at: float | None = None,
    name: str | None = None,
) -> tuple[str, KeyInfo]:
    """Create a key; return the raw key (shown once, never stored) and its record."""
    _validate_limits(limits)
    if expires_at is not None and expires_at <= time.time():
        raise IdentityError("the expiry date is in the past")
    raw = KEY_PREFIX + _new_secret()
    key_id = "key_" + secrets.token_hex(8)
    prefix = raw[: len(KEY_PREFIX) + 4]
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
    return KeyInfo(
        row.id,
        tenant,
        row.role,
        row.prefix,
        row.name,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        _limits_of(row),
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
        raise IdentityError(f"key {key_id!r} does not exist")
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


def bootstrap_admin(
    db: Database, tenant: str = "admin", deliver: Callable[[str], None] | None = None
) -> str | None:
    """On a database with no keys, create the first admin key and return it; else None.

    One transaction (serialised by SQLite's write lock or a PostgreSQL advisory lock), so two
    gateways starting on an empty database make one key between them. `deliver` gets the key
    before the transaction commits: if it raises, no key is created.
    """
    raw = KEY_PREFIX + _new_secret()
    now = time.time()
    with db.transaction() as s:
        if db.backend == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(7263542)"))
        if s.scalar(select(func.count()).select_from(ApiKey)):
            return None
        t = s.scalar(select(Tenant).where(Tenant.name == tenant))
        if t is None:
            t = Tenant(name=tenant, created_at=now, weight=1.0)
            s.add(t)
            s.flush()
        s.add(
            ApiKey(
                id="key_" + secrets.token_hex(8), tenant_id=t.id, role=Role.ADMIN.value,
                key_hash=hash_key(raw), prefix=raw[: len(KEY_PREFIX) + 4], name="bootstrap",
                created_at=now,
            )
        )  # fmt: skip
        s.flush()
        if deliver is not None:
            deliver(raw)
    return raw


# -- authentication ------------------------------------------------------------------------


PRINCIPAL_SQL = (
    "SELECT k.id, k.key_hash, k.role, k.revoked_at, k.expires_at, "
    "k.rpm, k.tpm, k.max_concurrent, k.monthly_tokens, "
    "t.id, t.name, t.weight, t.rpm, t.tpm, t.max_concurrent, t.monthly_tokens, t.mask_prompts "
    "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = :digest"
)
_PRINCIPAL = text(PRINCIPAL_SQL)


def principal_shape(raw: str | None) -> str:
    """The key if it looks like one of ours; AuthError if it is missing or malformed."""
    if not raw:
        raise AuthError(
            "Missing API key. Send it as 'Authorization: Bearer sk-sovllm-...'.", "missing"
        )
    if not raw.startswith(KEY_PREFIX):
        raise AuthError("Incorrect API key provided.", "malformed")
    return raw


def principal_in(s: Session, raw: str | None) -> Principal:
    """The principal behind a bearer key, read in an open transaction, or AuthError."""
    digest = hash_key(principal_shape(raw))
    row = s.execute(_PRINCIPAL, {"digest": digest}).first()
    return principal_from_row(tuple(row) if row is not None else None, digest)


def principal_from_row(row: tuple[Any, ...] | None, digest: str) -> Principal:
    """A PRINCIPAL_SQL row as a principal, or AuthError for a missing or unusable key."""
    if row is None or not hmac.compare_digest(row[1], digest):
        raise AuthError("Incorrect API key provided.", "unknown")
    (key_id, _, role, revoked, expires, k_rpm, k_tpm, k_conc, k_month,
     tenant_id, tenant, weight, t_rpm, t_tpm, t_conc, t_month, mask) = row  # fmt: skip
    if revoked is not None:
        raise AuthError("This API key has been revoked.", "revoked")
    if expires is not None and expires <= time.time():
        raise AuthError("This API key has expired.", "expired")
    return Principal(
        key_id=key_id,
        tenant_id=tenant_id,
        tenant=tenant,
        role=Role(role),
        key_limits=Limits(k_rpm, k_tpm, k_conc, k_month),
        tenant_limits=Limits(t_rpm, t_tpm, t_conc, t_month),
        tenant_weight=weight,
        mask_prompts=bool(mask),
    )


def authenticate(db: Database, raw: str | None) -> Principal:
    """The principal behind a bearer key, or AuthError (never naming the key)."""
    with db.read() as s:
        return principal_in(s, raw)
