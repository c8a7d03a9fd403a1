"""Who is calling: roles, limits, principals, and a bearer key's principal (`authenticate`).

The tenants and keys themselves are created, changed and listed in tenants.py.

A key is shown once and stored only as its SHA-256. Keys carry 240 random bits, so a fast hash
is enough (as for GitHub or Stripe tokens); the lookup is by hash, and the final comparison is
constant-time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from sovllm.store.db import Database

KEY_PREFIX = "sk-sovllm-"
_SECRET_LEN = 40  # base62 characters: ~238 bits
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
MAX_LIMIT = 2**62


class Role(enum.StrEnum):
    USER = "user"
    AUDITOR = "auditor"
    ADMIN = "admin"
    REVIEWER = "reviewer"
    """Reviews answers under the tenant's review policy (governance/review.py); no inference."""


class IdentityError(Exception):
    """A management operation that cannot be done; the message says why."""


class NotFound(IdentityError):
    """The tenant or key named does not exist."""


class AlreadyExists(IdentityError):
    """A tenant of that name exists."""


class HasLiveKeys(IdentityError):
    """A tenant with live keys cannot be deleted without revoking them."""


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


LIMIT_NAMES = ("rpm", "tpm", "max_concurrent", "monthly_tokens")


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
    review_policy: str = "none"
    """The tenant's review policy as stored (governance/review.py parses it)."""

    def actor(self) -> dict[str, str]:
        """Who acted, for an audit entry: the key's id, tenant and role (never the key)."""
        return {"tenant": self.tenant, "key_id": self.key_id, "role": self.role.value}


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
    review_policy: str = "none"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))


# -- authentication ------------------------------------------------------------------------


PRINCIPAL_SQL = (
    "SELECT k.id, k.key_hash, k.role, k.revoked_at, k.expires_at, "
    "k.rpm, k.tpm, k.max_concurrent, k.monthly_tokens, "
    "t.id, t.name, t.weight, t.rpm, t.tpm, t.max_concurrent, t.monthly_tokens, t.mask_prompts, "
    "t.review_policy "
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
    # The columns of PRINCIPAL_SQL: the key's (its limits at 5-8), then the tenant's (12-15).
    key_id, _, role, revoked, expires = row[:5]
    tenant_id, tenant, weight, mask = row[9], row[10], row[11], row[16]
    if revoked is not None:
        raise AuthError("This API key has been revoked.", "revoked")
    if expires is not None and expires <= time.time():
        raise AuthError("This API key has expired.", "expired")
    return Principal(
        key_id=key_id,
        tenant_id=tenant_id,
        tenant=tenant,
        role=Role(role),
        key_limits=Limits(*row[5:9]),
        tenant_limits=Limits(*row[12:16]),
        tenant_weight=weight,
        mask_prompts=bool(mask),
        review_policy=row[17] or "none",
    )


def authenticate(db: Database, raw: str | None) -> Principal:
    """The principal behind a bearer key, or AuthError (never naming the key)."""
    with db.read() as s:
        return principal_in(s, raw)
