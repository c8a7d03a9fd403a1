"""The model allow-list: folder hashes as `sha256sum` computes them, signed rows whose edits,
deletions and replays are detected, key rotation, and the start-up check of planned replicas
(the embedded model, a started vLLM replica, attached replicas) under enforce, warn and off.
Every database test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from sovllm.config import Settings, load_settings
from sovllm.engines.weights import hash_weights, manifest_text
from sovllm.governance.audit import key_path, open_audit
from sovllm.governance.audit import records as kinds
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.keys import rotate_signing_key
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_database
from sovllm.governance.provenance import allowlist
from sovllm.pool.backends import OpenAIBackend
from sovllm.pool.settings import ReplicaSettings
from sovllm.serve import build, provenance
from sovllm.serve.replicas import plan
from sovllm.store.db import Database

ACTOR = {"cli": "tester", "host": "here"}


def fake_weights(folder: Path, seed: bytes = b"w") -> Path:
    """A tiny Hugging Face-shaped folder: what vLLM would be launched with."""
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(seed * 4096)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "download.lock").write_text("not hashed")
    return folder


def test_a_folder_hash_is_the_sha256_of_its_sha256sum_manifest(tmp_path: Path) -> None:
    folder = fake_weights(tmp_path / "m")
    w = hash_weights(folder)
    assert w.kind == "folder"
    assert sorted(w.files) == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    shell = subprocess.run(
        "find -L . -type f -not -path '*/.*' -printf '%P\\n' | LC_ALL=C sort "
        "| xargs -d '\\n' sha256sum",
        shell=True,
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert manifest_text(w.files) == shell
    digest = subprocess.run(
        ["sha256sum"], input=shell, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert w.sha256 == digest
    # Any file counts, the tensors or not; hidden ones do not.
    (folder / ".cache" / "download.lock").write_text("changed")
    assert hash_weights(folder).sha256 == w.sha256
    (folder / "sub" / "tokenizer.json").write_text('{"x": 1}')
    assert hash_weights(folder).sha256 != w.sha256
    single = hash_weights(folder / "config.json")
    assert single.kind == "file" and single.files == {}


@pytest.fixture
def settings(db: Database, tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path / "data", database_url=str(db.engine.url))


@pytest.fixture
def log(db: Database, settings: Settings) -> Iterator[AuditLog]:
    audit = open_audit(settings, db)
    yield audit
    audit.close()


def _entries(db: Database, kind: str) -> list[dict[str, object]]:
    with db.read() as s:
        rows = s.execute(
            text("SELECT body FROM audit_entries WHERE kind = :k ORDER BY seq"), {"k": kind}
        )
        return [json.loads(str(b)) for (b,) in rows]


def _approve(log: AuditLog, folder: Path) -> allowlist.Approval:
    return allowlist.approve(log, hash_weights(folder), "m", "hf:org/m", "apache-2.0", ACTOR)


def test_an_approval_is_signed_audited_and_verifies(
    log: AuditLog, db: Database, tmp_path: Path
) -> None:
    a = _approve(log, fake_weights(tmp_path / "m"))
    found = allowlist.listing(log)
    assert found.ok and [v.approval.sha256 for v in found.rows] == [a.sha256]
    assert a.approved_by == ACTOR and a.kind == "folder" and len(a.files) == 3
    (entry,) = _entries(db, kinds.MODEL_APPROVE)
    assert entry["sha256"] == a.sha256 and entry["signature"] == a.signature
    assert entry["actor"] == ACTOR and entry["licence"] == "apache-2.0"
    assert entry["files"] == a.files
    assert verify_database(db, log.signer.verifier).ok

    revoked = allowlist.revoke(log, a.sha256, ACTOR)
    assert not revoked.active and revoked.signature != a.signature
    looked = allowlist.lookup(log, a.sha256)
    assert looked is not None and looked.problem is None and not looked.approval.active
    assert _entries(db, kinds.MODEL_REVOKE)[0]["sha256"] == a.sha256
    with pytest.raises(allowlist.AllowListError, match="not on the model allow-list"):
        allowlist.revoke(log, a.sha256, ACTOR)


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE model_allowlist SET licence = 'mit'",
        "UPDATE model_allowlist SET revoked_at = NULL, revoked_by = NULL",
        "UPDATE model_allowlist SET files = '{}'",
    ],
)
def test_an_edited_row_is_detected(log: AuditLog, db: Database, tmp_path: Path, edit: str) -> None:
    a = _approve(log, fake_weights(tmp_path / "m"))
    if "revoked_at = NULL" in edit:
        allowlist.revoke(log, a.sha256, ACTOR)
    with db.transaction() as s:
        s.execute(text(edit))
    looked = allowlist.lookup(log, a.sha256)
    assert looked is not None and looked.problem is not None
    assert "signature does not verify" in looked.problem
    assert not allowlist.listing(log).ok
    with pytest.raises(allowlist.AllowListError, match="signature does not verify"):
        allowlist.revoke(log, a.sha256, ACTOR)  # signing it again would launder the edit


def test_a_replayed_a_deleted_and_a_foreign_signed_row_are_detected(
    log: AuditLog, db: Database, tmp_path: Path
) -> None:
    a = _approve(log, fake_weights(tmp_path / "a"))
    with db.read() as s:
        old = dict(s.execute(text("SELECT * FROM model_allowlist")).mappings().one())
    allowlist.revoke(log, a.sha256, ACTOR)
    with db.transaction() as s:  # the old, validly signed approval put back
        s.execute(text("DELETE FROM model_allowlist"))
        cols = ", ".join(old)
        s.execute(text(f"INSERT INTO model_allowlist ({cols}) VALUES (:{', :'.join(old)})"), old)
    looked = allowlist.lookup(log, a.sha256)
    assert looked is not None and looked.problem is not None
    assert "another version of the row" in looked.problem

    b = _approve(log, fake_weights(tmp_path / "b", b"z"))
    with db.transaction() as s:
        s.execute(text("DELETE FROM model_allowlist WHERE sha256 = :s"), {"s": b.sha256})
    assert allowlist.listing(log).missing == [b.sha256]

    # A row signed with a key of the attacker's own: its signature verifies, its key is not
    # the log's.
    stranger = AuditLog(db, Signer(log.origin, Ed25519PrivateKey.generate()), log.origin)
    forged = allowlist._signed(
        stranger, allowlist.Approval("f" * 64, "file", "x", "y", "z", {}, ACTOR, 1.0)
    )
    allowlist._save(stranger, forged, "test.forged", {})
    looked = allowlist.lookup(log, "f" * 64)
    assert looked is not None and looked.problem is not None
    assert "not the audit log's" in looked.problem


def test_rows_signed_before_a_key_rotation_still_verify(
    log: AuditLog, db: Database, settings: Settings, tmp_path: Path
) -> None:
    a = _approve(log, fake_weights(tmp_path / "m"))
    rotate_signing_key(log, key_path(settings), {"actor": ACTOR})
    fresh = open_audit(settings, db)  # a later process knows only the new key's file
    assert fresh.signer.verifier.encode() != a.verifier_key and allowlist.listing(fresh).ok
    assert allowlist.lookup(fresh, a.sha256) is not None


# -- the start-up check of what `serve` loads or routes to ----------------------------------


def _with(settings: Settings, mode: str, replicas: list[ReplicaSettings]) -> Settings:
    models = settings.models.model_copy(update={"allow_list": mode})
    return settings.model_copy(update={"models": models, "replicas": replicas})


def test_a_started_vllm_replica_is_checked_by_its_folders_hash(
    log: AuditLog, db: Database, settings: Settings, tmp_path: Path
) -> None:
    folder = fake_weights(tmp_path / "m")
    replica = ReplicaSettings(kind="vllm", name="v", model=str(folder), executable="no-vllm")
    s = _with(settings, "enforce", [replica])
    plans = plan(s)
    digest = hash_weights(folder).sha256
    with pytest.raises(provenance.ModelNotApproved) as refused:
        provenance.check(s, plans, log)
    assert f"replica 'v': weights {folder.resolve()} (sha256 {digest})" in str(refused.value)
    assert "not on the model allow-list" in str(refused.value)
    (entry,) = _entries(db, kinds.MODEL_REFUSE)
    assert entry["replica"] == "v" and entry["sha256"] == digest

    a = _approve(log, folder)
    provenance.check(s, plans, log)  # approved: no refusal
    # ... and its answers will carry the hash, as the embedded engine's do (system_fingerprint).
    assert plans[0].weights_sha256 == digest
    client = httpx.AsyncClient()
    backend = build._remote(s, plans[0], "", client)
    assert isinstance(backend, OpenAIBackend) and backend._served.sha256 == digest
    assert len(_entries(db, kinds.MODEL_REFUSE)) == 1

    (folder / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(provenance.ModelNotApproved, match="not on the model allow-list"):
        provenance.check(s, plans, log)
    allowlist.approve(log, hash_weights(folder), "m2", "s", "l", ACTOR)
    allowlist.revoke(log, hash_weights(folder).sha256, ACTOR)
    with pytest.raises(provenance.ModelNotApproved, match="revoked"):
        provenance.check(s, plans, log)
    assert a.active


def test_replicas_sovllm_does_not_start_must_declare_an_approved_hash(
    log: AuditLog, db: Database, settings: Settings, tmp_path: Path
) -> None:
    a = _approve(log, fake_weights(tmp_path / "m"))
    url = "http://127.0.0.1:9/v1"
    bare = ReplicaSettings(kind="vllm", name="remote", url=url, served_model_name="m")
    with pytest.raises(provenance.ModelNotApproved, match="must declare its weights' SHA-256"):
        provenance.check(
            _with(settings, "enforce", [bare]), plan(_with(settings, "off", [bare])), log
        )
    declared = bare.model_copy(update={"weights_sha256": a.sha256})
    s = _with(settings, "enforce", [declared])
    provenance.check(s, plan(s), log)
    other = bare.model_copy(update={"weights_sha256": "0" * 64})
    s = _with(settings, "enforce", [other])
    with pytest.raises(provenance.ModelNotApproved, match=f"sha256 {'0' * 64}"):
        provenance.check(s, plan(s), log)
    # A launched vLLM whose settings declare a hash that its folder does not have.
    launched = ReplicaSettings(
        kind="vllm", model=str(tmp_path / "m"), weights_sha256="1" * 64, executable="x"
    )
    s = _with(settings, "enforce", [launched])
    with pytest.raises(provenance.ModelNotApproved, match="declare weights_sha256 1111"):
        provenance.check(s, plan(s), log)
    # vLLM launched with a model id (it would fetch it): nothing local to hash.
    hub = ReplicaSettings(kind="vllm", model="org/model", executable="x")
    s = _with(settings, "enforce", [hub])
    with pytest.raises(provenance.ModelNotApproved, match="cannot be hashed"):
        provenance.check(s, plan(s), log)


def test_warn_serves_and_records_off_warns_once(
    log: AuditLog, db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    s = _with(settings, "warn", [])
    with caplog.at_level(logging.WARNING, "sovllm.models"):
        provenance.check(s, plan(s), log)
    (entry,) = _entries(db, kinds.MODEL_WARN)
    assert entry["replica"] == "local" and str(entry["path"]).endswith(".gguf")
    assert "served anyway" in caplog.text
    caplog.clear()
    s = _with(settings, "off", [])
    with caplog.at_level(logging.WARNING, "sovllm.models"):
        provenance.check(s, plan(s), log)
    assert caplog.text.count("no model allow-list is enforced") == 1
    assert len(_entries(db, kinds.MODEL_WARN)) == 1 and not _entries(db, kinds.MODEL_REFUSE)


def test_migration_0011_downgrades_and_upgrades(db: Database) -> None:
    from alembic import command

    from sovllm.store import migrate

    command.downgrade(migrate._config(db), "0010")
    with db.read() as s, pytest.raises(Exception, match="model_allowlist"):
        s.execute(text("SELECT 1 FROM model_allowlist"))
    migrate.upgrade(db)
    with db.read() as s:
        assert s.execute(text("SELECT COUNT(*) FROM model_allowlist")).scalar() == 0
