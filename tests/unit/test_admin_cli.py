"""`sovllm tenants|keys|usage|db` work offline on the server's database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.governance import identity as idn
from sovllm.governance import tenants
from sovllm.store.db import Database


def sovllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
def env(tmp_path: Path, database_url_any: str) -> dict[str, str]:
    return {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "SOVLLM_DATABASE_URL": database_url_any}


def test_keys_create_prints_the_key_alone_on_the_last_line(
    env: dict[str, str], database_url_any: str
) -> None:
    out = sovllm(
        env,
        "keys",
        "create",
        "--tenant",
        "cardiology",
        "--role",
        "admin",
        "--rpm",
        "30",
        "--tpm",
        "9000",
        "--max-concurrent",
        "4",
        "--monthly-tokens",
        "1000000",
        "--expires",
        "2999-01-01",
    )
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-sovllm-") and " " not in key
    p = idn.authenticate(Database(database_url_any), key)
    assert p.tenant == "cardiology" and p.role is idn.Role.ADMIN
    assert p.key_limits == idn.Limits(30, 9000, 4, 1_000_000)


def test_tenants_and_keys_round_trip(env: dict[str, str]) -> None:
    assert sovllm(env, "tenants", "create", "legal", "--rpm", "60", "--weight", "2").returncode == 0
    created = sovllm(env, "keys", "create", "--tenant", "legal")
    key = created.stdout.strip().splitlines()[-1]
    tenants = json.loads(sovllm(env, "tenants", "list", "--json").stdout)
    assert [(t["name"], t["weight"], t["limits"]["rpm"], t["active_keys"]) for t in tenants] == [
        ("legal", 2.0, 60, 1)
    ]
    keys = json.loads(sovllm(env, "keys", "list", "--json").stdout)
    assert len(keys) == 1 and keys[0]["active"] and key not in json.dumps(keys)
    assert sovllm(env, "keys", "revoke", keys[0]["id"]).returncode == 0
    assert json.loads(sovllm(env, "keys", "list", "--json").stdout)[0]["active"] is False
    refused = sovllm(env, "tenants", "delete", "nope")
    assert refused.returncode == 1 and "does not exist" in refused.stderr


def test_deleting_a_tenant_with_live_keys_needs_force(env: dict[str, str]) -> None:
    sovllm(env, "keys", "create", "--tenant", "hr")
    refused = sovllm(env, "tenants", "delete", "hr")
    assert refused.returncode == 1 and "--force" in refused.stderr
    done = sovllm(env, "tenants", "delete", "hr", "--force")
    assert done.returncode == 0 and "revoked 1 key" in done.stdout


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["keys", "create", "--tenant", "t", "--rpm", "-1"], "--rpm"),
        (["keys", "create", "--tenant", "t", "--role", "boss"], "--role"),
        (["keys", "create", "--tenant", "t", "--expires", "someday"], "--expires"),
        (["keys", "create", "--tenant", "t", "--expires", "2001-01-01"], "--expires"),
        (["usage", "--since", "yesterday"], "--since"),
    ],
)
def test_bad_flags_are_named(env: dict[str, str], args: list[str], flag: str) -> None:
    out = sovllm(env, *args)
    assert out.returncode == 2
    assert flag in out.stderr
    assert "Traceback" not in out.stderr


def test_usage_and_db_upgrade(env: dict[str, str]) -> None:
    assert "latest schema" in sovllm(env, "db", "upgrade").stdout
    out = sovllm(env, "usage", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_a_bad_database_url_is_named(tmp_path: Path) -> None:
    out = sovllm(
        {"SOVLLM_DATA_DIR": str(tmp_path), "SOVLLM_DATABASE_URL": "mysql://x/y"}, "keys", "list"
    )
    assert out.returncode == 2 and "database_url" in out.stderr


def test_each_change_from_the_command_line_is_an_admin_entry(
    env: dict[str, str], database_url_any: str
) -> None:
    """Through governance.tenancy, as the API's: the tenant a `keys create` makes has its entry
    too, and a tenant's entry names its weight."""
    assert sovllm(env, "tenants", "create", "legal", "--weight", "2").returncode == 0
    assert sovllm(env, "keys", "create", "--tenant", "audit-dept").returncode == 0
    refused = sovllm(env, "tenants", "create", "legal")
    assert refused.returncode == 1 and "already exists" in refused.stderr
    with Database(database_url_any).read() as s:
        rows = s.execute(
            text("SELECT body FROM audit_entries WHERE kind = 'admin' ORDER BY seq")
        ).all()
    entries = [json.loads(body) for (body,) in rows]
    assert [(e["action"], e["target"].get("name", e["target"].get("tenant"))) for e in entries] == [
        ("tenant.create", "legal"),
        ("tenant.create", "audit-dept"),
        ("key.create", "audit-dept"),
    ]  # the refused create has none
    assert entries[0]["target"]["weight"] == 2.0 and entries[0]["target"]["rpm"] is None
    assert set(entries[0]["actor"]) == {"cli", "host"}


def test_privacy_settings_from_the_command_line_are_admin_entries(
    env: dict[str, str], database_url_any: str
) -> None:
    """`privacy policy|mask` change a tenant as `tenants` does: one entry each, then the change."""
    assert sovllm(env, "tenants", "create", "ward").returncode == 0
    assert sovllm(env, "privacy", "policy", "ward", "redacted").returncode == 0
    assert sovllm(env, "privacy", "mask", "ward", "true").returncode == 0
    unknown = sovllm(env, "privacy", "policy", "nobody", "full")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
    db = Database(database_url_any)
    with db.read() as s:
        rows = s.execute(
            text("SELECT body FROM audit_entries WHERE kind = 'admin' ORDER BY seq")
        ).all()
    entries = [json.loads(body) for (body,) in rows]
    assert [(e["action"], e["target"]) for e in entries[1:]] == [
        ("tenant.update", {"name": "ward", "content_policy": "redacted"}),
        ("tenant.update", {"name": "ward", "mask_prompts": True}),
    ]  # the refused change has none
    assert set(entries[1]["actor"]) == {"cli", "host"}
    [ward] = [t for t in tenants.list_tenants(db) if t.name == "ward"]
    assert ward.content_policy == "redacted" and ward.mask_prompts is True


def test_bad_paths_and_an_empty_subject_are_one_line_each(tmp_path: Path) -> None:
    """Each is refused with one line naming it (exit 2), never a traceback, and changes nothing."""
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for data_dir in (a_file, a_file / "sub"):
        done = sovllm({"SOVLLM_DATA_DIR": str(data_dir)}, "stops")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"sovllm: cannot use {data_dir} (data_dir): ")
    data = {"SOVLLM_DATA_DIR": str(tmp_path / "data")}
    done = sovllm(data, "audit", "checkpoint", "--out", str(a_file))
    assert done.returncode == 2 and "cannot write a checkpoint into" in done.stderr, done.stderr
    witness = tmp_path / "missing" / "dpo"  # a mistyped folder is not made
    done = sovllm(data, "audit", "checkpoint", "--out", str(witness))
    assert done.returncode == 2 and not witness.parent.exists(), done.stderr
    done = sovllm(data, "privacy", "erase", "--subject", "")
    assert done.returncode == 2 and "must not be empty" in done.stderr, done.stderr
    done = sovllm(data, "privacy", "erase", "--subject", "key:key_typo")
    assert done.returncode == 1 and "no API key has the id 'key_typo'" in done.stderr
    assert "Traceback" not in done.stderr
    # An empty data_dir would put the database wherever the command runs.
    done = sovllm({"SOVLLM_DATA_DIR": ""}, "stops")
    assert (
        done.returncode == 2 and "'data_dir'" in done.stderr and "must not be empty" in done.stderr
    )
    # A witness's checkpoint given the offline flag's name is not silently ignored.
    done = sovllm(data, "audit", "verify", "--checkpoint", str(a_file))
    assert done.returncode == 2 and "only applies with --offline" in " ".join(done.stderr.split())
    # Random bytes are no weights to approve.
    (tmp_path / "noise.gguf").write_bytes(os.urandom(64))
    approve = ["models", "approve", str(tmp_path / "noise.gguf"), "--source", "x", "--licence", "y"]
    done = sovllm(data, *approve)
    assert done.returncode == 1 and "is not a GGUF file" in done.stderr, done.stderr
