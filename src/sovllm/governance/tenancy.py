"""Tenant and key changes, one function each, for the admin API and the command line alike.

Each checks the change (tenants.py `check_*`: a change refused, for a taken name or a missing
key, raises identity's errors and leaves no entry), writes its `admin` audit entry with the
actor (a principal's `actor()` through the API, `cli_actor()` from the command line), durable,
and only then makes it: no change without its record. A change that fails after its check (a
concurrent one took the name first) leaves an entry for an attempt that did not happen; the
error still reaches the caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from sovllm.governance import identity as idn
from sovllm.governance import review, tenants
from sovllm.governance.audit import records
from sovllm.governance.privacy.content import set_masking, set_policy
from sovllm.store.db import Database

Actor = records.Actor


@dataclass(frozen=True)
class NewTenant:
    name: str
    limits: idn.Limits = field(default_factory=idn.Limits)
    weight: float = 1.0
    content_policy: str = "none"
    mask_prompts: bool = False
    review_policy: str = "none"
    """none, sample:P or hold (governance/review.py)."""


@dataclass(frozen=True)
class TenantChange:
    """What a change names; None (and a limit not in `limits`) leaves it as it is."""

    name: str
    limits: Mapping[str, int | None] = field(default_factory=dict)
    """The limits to set; a None value removes that limit."""
    weight: float | None = None
    content_policy: str | None = None
    mask_prompts: bool | None = None
    review_policy: str | None = None


@dataclass(frozen=True)
class NewKey:
    tenant: str
    role: idn.Role
    limits: idn.Limits = field(default_factory=idn.Limits)
    expires_at: float | None = None
    name: str | None = None


def _record(write: records.Write, actor: Actor, action: str, target: Mapping[str, object]) -> None:
    write(records.ADMIN, records.admin(actor, action, target))


def create_tenant(
    db: Database, write: records.Write, actor: Actor, new: NewTenant
) -> idn.TenantInfo:
    tenants.check_new_tenant(db, new.name, new.limits, new.weight)
    review_policy = str(review.parse_policy(new.review_policy))
    target = {
        "name": new.name,
        **dataclasses.asdict(new.limits),
        "weight": new.weight,
        "content_policy": new.content_policy,
        "mask_prompts": new.mask_prompts,
        "review_policy": review_policy,
    }
    _record(write, actor, "tenant.create", target)
    return tenants.create_tenant(
        db, new.name, new.limits, new.weight, new.content_policy, new.mask_prompts, review_policy
    )


def update_tenant(
    db: Database, write: records.Write, actor: Actor, change: TenantChange
) -> idn.TenantInfo:
    """Apply what `change` names; the entry names exactly that."""
    tenants.check_tenant_change(db, change.name, change.limits, change.weight)
    review_policy = change.review_policy
    if review_policy is not None:
        review_policy = str(review.parse_policy(review_policy))
    named = {
        "weight": change.weight,
        "content_policy": change.content_policy,
        "mask_prompts": change.mask_prompts,
        "review_policy": review_policy,
    }
    given = {k: v for k, v in named.items() if v is not None}
    _record(write, actor, "tenant.update", {"name": change.name, **change.limits, **given})
    tenants.update_tenant(db, change.name, change.limits, change.weight)
    if change.content_policy is not None:
        set_policy(db, change.name, change.content_policy)
    if change.mask_prompts is not None:
        set_masking(db, change.name, change.mask_prompts)
    if review_policy is not None:
        review.set_policy(db, change.name, review_policy)
    return tenants.update_tenant(db, change.name)


def delete_tenant(
    db: Database, write: records.Write, actor: Actor, name: str, force: bool = False
) -> int:
    """Delete a tenant (`force` revokes its live keys); returns how many keys were revoked."""
    live = tenants.check_delete(db, name, force)
    _record(write, actor, "tenant.delete", {"name": name, "force": force, "revoked": live})
    return tenants.delete_tenant(db, name, force)


def create_key(
    db: Database, write: records.Write, actor: Actor, new: NewKey
) -> tuple[str, idn.KeyInfo]:
    """The raw key (shown once) and its record; the entry names only its id and prefix."""
    tenants.check_new_key(db, new.tenant, new.limits, new.expires_at)
    key = tenants.mint_key()
    role = new.role.value
    target = {"key_id": key.id, "prefix": key.prefix, "tenant": new.tenant, "role": role}
    _record(write, actor, "key.create", target)
    return tenants.create_key(
        db, new.tenant, new.role, new.limits, new.expires_at, new.name, minted=key
    )


def update_key(
    db: Database,
    write: records.Write,
    actor: Actor,
    key_id: str,
    limits: Mapping[str, int | None],
) -> idn.KeyInfo:
    """Set the limits named in `limits` (None removes one); keep the others."""
    tenants.check_key_change(db, key_id, limits)
    _record(write, actor, "key.update", {"key_id": key_id, **limits})
    return tenants.update_key_limits(db, key_id, limits)


def revoke_key(db: Database, write: records.Write, actor: Actor, key_id: str) -> idn.KeyInfo:
    tenants.check_key_change(db, key_id, {})
    _record(write, actor, "key.revoke", {"key_id": key_id})
    return tenants.revoke_key(db, key_id)
