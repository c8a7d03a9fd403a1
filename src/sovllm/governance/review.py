"""Human review of answers (AI Act Art. 14(4)(b)-(d)): a person can interpret an answer, decide
not to use it, and disregard or override it.

Each tenant has a review policy (`tenants.review_policy`):

- `none` (the default): nothing is queued;
- `sample:P`: P% of answers, drawn at random, are queued for review after they were delivered;
- `hold`: a non-streamed chat answer is held until a reviewer approves it; the client gets a
  pending completion and fetches the approved answer with `GET /v1/chat/completions/{id}`. A
  streamed request, or a legacy `/v1/completions` one, is refused (`NotHoldable`): it cannot be
  held.

A held answer is sealed in the `reviews` row under its data subject's key (the content vault's
keys, so erasing the subject shreds it) whatever the content policy, so it outlives a restart
undelivered. It is deleted when it is first delivered to its client after approval, or at an
override: it is never delivered then. What a reviewer reads follows the content policy under
which the request ran (review_view.py). Each decision is an audit entry with its actor, durable
before the decision is made.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sovllm.governance.audit import operations, records
from sovllm.governance.identity import IdentityError, NotFound, Principal
from sovllm.governance.privacy.content import ContentVault
from sovllm.store.db import Database
from sovllm.store.schema import Review, Tenant

MODES = ("none", "sample", "hold")
STATUSES = ("pending", "approved", "overridden")
DECISIONS = {"approve": "approved", "override": "overridden"}
MAX_NOTE = 2000
HELD_LABEL = "held"
"""What a held answer's seal is bound to, with its request id."""


class PolicyError(IdentityError):
    """A review policy that is not one (400)."""


class ReviewNotFound(NotFound):
    """No such review, or not one the caller may see (404 either way)."""


class ReviewConflict(IdentityError):
    """A decision the review's state does not allow (409): e.g. approving an overridden one."""


class NotHoldable(Exception):
    """The tenant holds answers for review, and this request's answer cannot be held (400)."""

    def __init__(self, principal: Principal, message: str) -> None:
        super().__init__(message)
        self.principal = principal


@dataclass(frozen=True)
class ReviewPolicy:
    mode: str
    percent: float = 0.0
    """For `sample`: the share of answers queued, 0 < percent <= 100."""

    def __str__(self) -> str:
        return f"sample:{self.percent:g}" if self.mode == "sample" else self.mode

    def picks(self, draw: float | None = None) -> bool:
        """Whether this answer is queued after delivery (`sample`); `draw` in [0, 1)."""
        if self.mode != "sample":
            return False
        return (random.random() if draw is None else draw) * 100 < self.percent


def parse_policy(text: str) -> ReviewPolicy:
    """`none`, `hold` or `sample:P` (P a percentage, 0 < P <= 100), or PolicyError."""
    value = text.strip()
    if value in ("none", "hold"):
        return ReviewPolicy(value)
    if value.startswith("sample:"):
        raw = value.removeprefix("sample:").removesuffix("%")
        try:
            percent = float(raw)
        except ValueError:
            percent = math.nan
        if 0 < percent <= 100:
            return ReviewPolicy("sample", percent)
    raise PolicyError(
        f"review policy must be none, hold or sample:P with 0 < P <= 100 (a percentage), "
        f"got {text!r}"
    )


def check_holdable(principal: Principal, stream: bool, chat: bool) -> None:
    """Under `hold`, refuse a request whose answer could not be held (before admission)."""
    if parse_policy(principal.review_policy).mode != "hold":
        return
    why = (
        f"Tenant {principal.tenant} holds every answer for human review before it is delivered "
        "(review policy 'hold')"
    )
    if stream:
        raise NotHoldable(
            principal,
            f"{why}, so answers cannot be streamed: send the request with stream set to false, "
            "then fetch the approved answer with GET /v1/chat/completions/{id}.",
        )
    if not chat:
        raise NotHoldable(
            principal,
            f"{why}, and only chat completions can be held: use POST /v1/chat/completions "
            "without streaming, then GET /v1/chat/completions/{id}.",
        )


def set_policy(db: Database, tenant: str, policy: str) -> None:
    value = str(parse_policy(policy))
    with db.transaction() as s:
        found = s.execute(update(Tenant).where(Tenant.name == tenant).values(review_policy=value))
        if not found.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"tenant {tenant!r} does not exist")


# -- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """An answer entering the queue: whose, which, and the completion's figures."""

    request_id: str
    tenant_id: int
    key_id: str
    mode: str
    route: str
    model: str
    weights_sha256: str | None
    created: int
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    content_policy: str
    subject: str


def queue(db: Database, vault: ContentVault, item: Queued, answer: str | None) -> None:
    """Put an answer in the queue; under `hold`, `answer` is sealed until it is decided."""
    nonce = sealed = None
    if item.mode == "hold":
        assert answer is not None
        nonce, sealed = vault.seal(item.subject, f"{item.request_id}|{HELD_LABEL}", answer)
    with db.transaction() as s:
        s.add(
            Review(
                **{k: getattr(item, k) for k in Queued.__dataclass_fields__},
                status="pending",
                queued_at=time.time(),
                nonce=nonce,
                sealed=sealed,
            )
        )


@dataclass(frozen=True)
class ReviewInfo:
    """A review as listed: everything but the answer itself."""

    request_id: str
    tenant: str
    key_id: str
    mode: str
    status: str
    route: str
    model: str
    weights_sha256: str | None
    created: int
    queued_at: float
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    content_policy: str
    held: bool
    """A sealed answer is waiting (held, not yet delivered or overridden)."""
    decided_at: float | None
    reviewer: dict[str, Any] | None
    note: str | None
    delivered_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _info(row: Review, tenant: str) -> ReviewInfo:
    return ReviewInfo(
        request_id=row.request_id,
        tenant=tenant,
        key_id=row.key_id,
        mode=row.mode,
        status=row.status,
        route=row.route,
        model=row.model,
        weights_sha256=row.weights_sha256,
        created=row.created,
        queued_at=row.queued_at,
        finish_reason=row.finish_reason,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        content_policy=row.content_policy,
        held=row.sealed is not None,
        decided_at=row.decided_at,
        reviewer=json.loads(row.reviewer) if row.reviewer else None,
        note=row.note,
        delivered_at=row.delivered_at,
    )


def _scoped(s: Session, request_id: str, tenant_id: int | None) -> tuple[Review, str]:
    """The review, if `tenant_id` (a reviewer's tenant; None: every tenant) may see it."""
    q = select(Review, Tenant.name).join(Tenant, Tenant.id == Review.tenant_id)
    q = q.where(Review.request_id == request_id)
    if tenant_id is not None:
        q = q.where(Review.tenant_id == tenant_id)
    found = s.execute(q).first()
    if found is None:
        raise ReviewNotFound(f"no review for request {request_id!r}")
    return found[0], found[1]


def list_reviews(
    db: Database,
    scope: int | None,
    status: str | None = "pending",
    tenant: str | None = None,
    limit: int = 100,
) -> list[ReviewInfo]:
    """The reviews `scope` may see (a tenant id; None: all), oldest pending first."""
    if status is not None and status not in STATUSES:
        raise PolicyError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    q = select(Review, Tenant.name).join(Tenant, Tenant.id == Review.tenant_id)
    if scope is not None:
        q = q.where(Review.tenant_id == scope)
    if status is not None:
        q = q.where(Review.status == status)
    if tenant is not None:
        q = q.where(Tenant.name == tenant)
    with db.read() as s:
        rows = s.execute(q.order_by(Review.queued_at).limit(limit)).all()
        return [_info(r, t) for r, t in rows]


def get_review(db: Database, request_id: str, scope: int | None) -> ReviewInfo:
    with db.read() as s:
        return _info(*_scoped(s, request_id, scope))


def check_decision(
    db: Database, request_id: str, decision: str, note: str | None, scope: int | None
) -> ReviewInfo:
    """What `decide` would refuse, read without changing anything."""
    if decision not in DECISIONS:
        raise PolicyError(f"decision must be approve or override, got {decision!r}")
    if decision == "override" and not (note or "").strip():
        raise PolicyError("an override needs a note saying why the answer is disregarded")
    if note is not None and len(note) > MAX_NOTE:
        raise PolicyError(f"the note must be at most {MAX_NOTE} characters, got {len(note)}")
    info = get_review(db, request_id, scope)
    allowed = ("pending",) if decision == "approve" else ("pending", "approved")
    if info.status not in allowed:
        raise ReviewConflict(
            f"review {request_id} is already {info.status}: it cannot be {DECISIONS[decision]} now"
        )
    return info


RequestWrite = Callable[[str, dict[str, Any], str], None]
"""Writes one audit entry (kind, body, request id), durable when it returns."""


def decide(
    db: Database,
    write: RequestWrite,
    actor: records.Actor,
    request_id: str,
    decision: str,
    note: str | None = None,
    scope: int | None = None,
) -> ReviewInfo:
    """Approve or override an answer: checked, recorded (durable), then made. An override
    deletes a held answer: it is never delivered."""
    before = check_decision(db, request_id, decision, note, scope)
    status = DECISIONS[decision]
    fields = operations.review_decided(
        actor, decision, before.status, before.mode, before.tenant, note
    )
    write(records.REVIEW_DECIDED, fields, request_id)
    values: dict[str, Any] = {
        "status": status,
        "decided_at": time.time(),
        "reviewer": json.dumps(dict(actor), sort_keys=True),
        "note": note,
    }
    if decision == "override":
        values.update(nonce=None, sealed=None)
    with db.transaction() as s:
        done = s.execute(
            update(Review)
            .where(Review.request_id == request_id, Review.status == before.status)
            .values(**values)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            raise ReviewConflict(f"review {request_id} was decided by someone else meanwhile")
    return get_review(db, request_id, scope)


# -- the answer's own client ---------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    info: ReviewInfo
    text: str | None
    """The approved held answer, on its first delivery; else None."""
    first: bool
    """This call delivered it (its sealed copy is now deleted)."""


def for_owner(db: Database, vault: ContentVault, request_id: str, key_id: str) -> Delivery:
    """The review of an answer, for the key that asked for it (any other: ReviewNotFound).

    An approved held answer is unsealed and handed over once: its sealed copy is deleted by a
    conditional update, so two fetches cannot both deliver it.
    """
    with db.read() as s:
        found = s.execute(
            select(Review, Tenant.name)
            .join(Tenant, Tenant.id == Review.tenant_id)
            .where(Review.request_id == request_id, Review.key_id == key_id)
        ).first()
        if found is None:
            raise ReviewNotFound(f"no stored completion {request_id!r} for this key")
        row, tenant = found[0], found[1]
        info = _info(row, tenant)
        sealed, nonce, subject = row.sealed, row.nonce, row.subject
    if info.status != "approved" or sealed is None or nonce is None:
        return Delivery(info, None, False)
    # Unsealed outside the transaction: the vault reads the subject's key in one of its own.
    text = vault.unseal(subject, f"{request_id}|{HELD_LABEL}", nonce, sealed)
    # None: its data subject was erased. The copy no key opens goes, and nothing was delivered.
    now = time.time() if text is not None else None
    with db.transaction() as s:
        done = s.execute(
            update(Review)
            .where(
                Review.request_id == request_id,
                Review.status == "approved",  # not overridden meanwhile
                Review.sealed.is_not(None),
            )
            .values(sealed=None, nonce=None, delivered_at=now)
        )
    if not done.rowcount:  # type: ignore[attr-defined]
        return Delivery(get_review(db, request_id, None), None, False)  # another fetch had it
    info = dataclasses.replace(info, held=False, delivered_at=now)
    return Delivery(info, text, text is not None)
