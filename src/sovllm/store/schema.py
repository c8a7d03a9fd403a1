"""Tables. State shared by gateway processes (keys, quotas, usage) lives here, never in memory."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    rpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_concurrent: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    content_policy: Mapped[str] = mapped_column(String(16), default="none")
    """none: metadata and keyed hashes only; redacted: masked content; full: content."""
    mask_prompts: Mapped[bool] = mapped_column(Boolean, default=False)
    """Personal data is masked before prompts reach the model; unmaskable ones are refused."""


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_concurrent: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RateBucket(Base):
    """Requests admitted and tokens used in one second by one key ("k:<id>") or tenant
    ("t:<id>"): the sliding RPM and TPM windows sum the last 61 of these (see quotas.WINDOW_S)."""

    __tablename__ = "rate_buckets"

    scope: Mapped[str] = mapped_column(String(48), primary_key=True)
    second: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)


class Inflight(Base):
    """A request between admission and settlement; its lease bounds what a crash can leak."""

    __tablename__ = "inflight"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    tenant_id: Mapped[int] = mapped_column(Integer, index=True)
    started_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float] = mapped_column(Float)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger)


class UsageDaily(Base):
    __tablename__ = "usage_daily"
    __table_args__ = (
        Index("ix_usage_daily_tenant_day", "tenant_id", "day"),
        Index("ix_usage_daily_key_day", "key_id", "day"),
    )

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageMonthly(Base):
    """Usage past `retention.usage_days`, rolled up per tenant and month (the days are deleted)."""

    __tablename__ = "usage_monthly"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    """YYYY-MM."""
    tenant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditEntry(Base):
    """One leaf of the audit log's Merkle tree; `body` is the canonical JSON that is hashed.

    `at`, `kind` and `request_id` repeat body fields for lookup; verify checks them against it.
    """

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float, index=True)
    """Exactly the body's `time` as a POSIX timestamp (log.instant)."""
    kind: Mapped[str] = mapped_column(String(32), index=True)
    """Indexed for the newest key transition, read at each checkpoint (audit/log.py)."""
    request_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    """NULL once pruned past `retention.audit_days`; `leaf_hash` stays, so proofs still hold."""
    leaf_hash: Mapped[str] = mapped_column(String(64))
    pruned_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The seq of the `retention.prune` entry that removed the body (when, which setting)."""


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    compact: Mapped[str] = mapped_column(Text)
    """The tree's complete subtrees at this size (JSON): the next checkpoint starts from it."""
    # No signing time: the note does not carry one, so it could not be checked (dropped in 0006).


class SubjectKey(Base):
    """A data subject's content key, wrapped by the master key; erased = NULL (crypto-shred)."""

    __tablename__ = "subject_keys"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    erased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    master_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """The id of the master key that wraps it (privacy/masterkey.py); NULL: from before 0007."""


class StoredContent(Base):
    """A prompt or answer kept under a tenant's content policy, encrypted for its subject.

    Kept outside the audit log's leaves (which hold only its HMAC), so erasing or purging it
    leaves every Merkle proof valid.
    """

    __tablename__ = "stored_content"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    part: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(64), index=True)
    policy: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, index=True)


class Stop(Base):
    """A human's stop (AI Act Art. 14(4)(e)): everything, one model or one tenant, until resumed."""

    __tablename__ = "stops"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    """all, model or tenant."""
    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The model or tenant name; empty for all."""
    mode: Mapped[str] = mapped_column(String(8))
    """drain: requests in flight finish; cut: they end within a second."""
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    """Who stopped it, as JSON."""
    created_at: Mapped[float] = mapped_column(Float)
