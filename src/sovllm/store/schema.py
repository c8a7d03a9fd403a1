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
    review_policy: Mapped[str] = mapped_column(String(16), default="none")
    """none, sample:P (P% of answers reviewed after delivery) or hold (governance/review.py)."""


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
    owner: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    """The gateway instance that admitted it (GatewayInstance.id); NULL: only the lease."""


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
    energy_joules: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    energy_co2e_g: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    energy_source: Mapped[str] = mapped_column(String(16), default="", server_default="")
    """Where the day's joules were read (`measured:rapl`, `estimated`...); `mixed` when its
    requests had different sources; empty when none had energy."""


class UsageMonthly(Base):
    """Usage past `retention.usage_days`, rolled up per tenant and month (the days are deleted)."""

    __tablename__ = "usage_monthly"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    """YYYY-MM."""
    tenant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    energy_joules: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    energy_co2e_g: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


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


class Incident(Base):
    """A serious incident (AI Act Art. 73) or an information security incident (ISO/IEC 27001
    A.5.24-A.5.28), from the deployer's awareness to its report and closure."""

    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    severity: Mapped[str] = mapped_column(String(32))
    """The class that sets the reporting deadline (governance/incidents.py SEVERITIES)."""
    summary: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """open, investigating, reported or closed."""
    aware_at: Mapped[float] = mapped_column(Float)
    """When the deployer became aware: the deadline runs from here."""
    deadline_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """None: a class with no report due to an authority."""
    opened_at: Mapped[float] = mapped_column(Float)
    reported_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    actor: Mapped[str] = mapped_column(Text)
    """Who opened it, as JSON."""


class IncidentEvent(Base):
    """What was done about an incident: its opening, each link and each status change."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(16))
    """open, link or status."""
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """A linked request (action link)."""
    from_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    to_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """A linked range of audit entries, both ends included (action link)."""
    actor: Mapped[str] = mapped_column(Text)


class ModelApproval(Base):
    """A model's weights on the allow-list (governance/provenance/allowlist.py), signed with the
    audit log's key over every other column, so an edit in the database is detected."""

    __tablename__ = "model_allowlist"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    """A file's SHA-256, or a folder's (engines/weights.py)."""
    kind: Mapped[str] = mapped_column(String(8))
    """file or folder."""
    name: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    licence: Mapped[str] = mapped_column(Text)
    files: Mapped[str] = mapped_column(Text)
    """A folder's files and their SHA-256 (JSON); {} for a file."""
    approved_by: Mapped[str] = mapped_column(Text)
    """Who approved it, as JSON."""
    approved_at: Mapped[float] = mapped_column(Float)
    revoked_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    signature: Mapped[str] = mapped_column(Text)
    """Ed25519 over the row's other columns (base64), by the key `verifier_key` names."""
    verifier_key: Mapped[str] = mapped_column(Text)


class Review(Base):
    """An answer queued for human review (AI Act Art. 14(4)(b)-(d)): sampled after delivery, or
    held until a reviewer approves it (governance/review.py)."""

    __tablename__ = "reviews"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer, index=True)
    key_id: Mapped[str] = mapped_column(String(32))
    """The key that asked: the only one that may fetch the answer."""
    mode: Mapped[str] = mapped_column(String(8))
    """hold or sample."""
    status: Mapped[str] = mapped_column(String(16), index=True)
    """pending, approved or overridden."""
    route: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    weights_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[int] = mapped_column(BigInteger)
    """The completion's `created` (Unix seconds)."""
    queued_at: Mapped[float] = mapped_column(Float, index=True)
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    content_policy: Mapped[str] = mapped_column(String(16))
    """The tenant's content policy when the answer was made: what a reviewer may read."""
    subject: Mapped[str] = mapped_column(String(64))
    """The data subject whose key seals the held answer (erasure shreds it)."""
    nonce: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    """A held answer, sealed for delivery; NULL once delivered or overridden, and for samples."""
    decided_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reviewer: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Who decided, as JSON."""
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When the approved held answer went to its client."""


class GatewayInstance(Base):
    """A running gateway process, so the in-flight rows of a dead one can be released
    (governance/instances.py): proven dead on its own host, or silent past the heartbeat."""

    __tablename__ = "gateway_instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(128))
    """Boot id and pid namespace: processes with the same `host` see each other's pids."""
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    proc_start: Mapped[int] = mapped_column(BigInteger)
    """The process's start time in clock ticks since boot: a reused pid does not match."""
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    """On the database's clock, so gateways on hosts whose clocks differ agree on its age."""
