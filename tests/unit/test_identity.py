"""Tenants, keys and roles, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from sovllm.governance import identity as idn
from sovllm.governance import tenants
from sovllm.governance.bootstrap import bootstrap_admin
from sovllm.store.db import Database


def test_a_key_authenticates_to_its_tenant_and_role(db: Database) -> None:
    tenants.create_tenant(db, "radiology", idn.Limits(rpm=10))
    raw, info = tenants.create_key(db, "radiology", idn.Role.AUDITOR, idn.Limits(tpm=500))
    assert raw.startswith("sk-sovllm-") and len(raw) > 40
    p = idn.authenticate(db, raw)
    assert (p.tenant, p.role, p.key_id) == ("radiology", idn.Role.AUDITOR, info.id)
    assert p.key_limits.tpm == 500 and p.tenant_limits.rpm == 10
    assert raw.startswith(info.prefix)


def test_only_the_hash_is_stored(db: Database) -> None:
    tenants.create_tenant(db, "t")
    raw, _ = tenants.create_key(db, "t", idn.Role.USER)
    with db.transaction() as s:
        rows = s.execute(text("SELECT * FROM api_keys")).all()
    dumped = repr(rows)
    assert raw not in dumped
    assert raw[len(idn.KEY_PREFIX) + 4 :] not in dumped


@pytest.mark.parametrize("bad", [None, "", "sk-sovllm-nope", "Bearer x", "sk-other-123"])
def test_missing_or_wrong_keys_are_refused_without_echoing_them(
    db: Database, bad: str | None
) -> None:
    with pytest.raises(idn.AuthError) as err:
        idn.authenticate(db, bad)
    if bad:
        assert bad not in str(err.value)


def test_revoked_and_expired_keys_are_refused(db: Database) -> None:
    tenants.create_tenant(db, "t")
    raw, info = tenants.create_key(db, "t", idn.Role.USER)
    tenants.revoke_key(db, info.id)
    with pytest.raises(idn.AuthError, match="revoked"):
        idn.authenticate(db, raw)
    soon, _ = tenants.create_key(db, "t", idn.Role.USER, expires_at=time.time() + 0.5)
    idn.authenticate(db, soon)
    with db.transaction() as s:
        s.execute(
            text("UPDATE api_keys SET expires_at = :t WHERE revoked_at IS NULL"),
            {"t": time.time() - 1},
        )
    with pytest.raises(idn.AuthError, match="expired"):
        idn.authenticate(db, soon)


def test_deleting_a_tenant_with_live_keys_needs_force(db: Database) -> None:
    tenants.create_tenant(db, "legal")
    raw, _ = tenants.create_key(db, "legal", idn.Role.USER)
    with pytest.raises(idn.IdentityError, match="live key"):
        tenants.delete_tenant(db, "legal")
    assert tenants.delete_tenant(db, "legal", force=True) == 1
    with pytest.raises(idn.AuthError):
        idn.authenticate(db, raw)
    assert "legal" not in {t.name for t in tenants.list_tenants(db)}
    tenants.create_tenant(db, "legal")  # the name is free again


def test_bad_management_input_is_named(db: Database) -> None:
    with pytest.raises(idn.IdentityError, match="tenant name"):
        tenants.create_tenant(db, "Bad Name!")
    tenants.create_tenant(db, "t")
    with pytest.raises(idn.IdentityError, match="already exists"):
        tenants.create_tenant(db, "t")
    with pytest.raises(idn.IdentityError, match="rpm"):
        tenants.create_key(db, "t", idn.Role.USER, idn.Limits(rpm=-1))
    with pytest.raises(idn.IdentityError, match="does not exist"):
        tenants.create_key(db, "nope", idn.Role.USER)
    with pytest.raises(idn.IdentityError, match="does not exist"):
        tenants.revoke_key(db, "key_missing")


def test_bootstrap_creates_one_admin_key_once(db: Database) -> None:
    raw = bootstrap_admin(db)
    assert raw is not None
    assert idn.authenticate(db, raw).role is idn.Role.ADMIN
    assert bootstrap_admin(db) is None
    assert tenants.count_keys(db) == 1
