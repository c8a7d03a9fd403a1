"""The pseudonym key at start-up: random on a fresh log, the legacy derivation only where the log
needs it, its id recorded in the log and a mismatching file refused; made atomically; erasure
refusing where it cannot reach every epoch, receipts signed with the current signing key."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text

from sovllm.config import load_settings
from sovllm.datadir import loose
from sovllm.governance.audit import (
    PseudonymKeyError,
    key_path,
    open_audit,
    open_signer,
    pseudonym_key_path,
)
from sovllm.governance.audit.checkpoint import Verifier
from sovllm.governance.audit.keys import rotate_signing_key
from sovllm.governance.audit.log import PSEUDONYM_KEY_KIND, AuditLog, canonical
from sovllm.governance.privacy import erasure
from sovllm.governance.privacy.content import master_key_path, open_vault
from sovllm.governance.privacy.masterkey import key_id, next_path, read_key, write_key
from sovllm.governance.privacy.pseudonyms import rotate_pseudonym_key
from sovllm.store.db import Database

ACTOR = {"cli": "tester", "host": "here"}


def recorded(db: Database) -> list[str]:
    with db.read() as s:
        rows = s.execute(
            text("SELECT body FROM audit_entries WHERE kind = :k ORDER BY seq"),
            {"k": PSEUDONYM_KEY_KIND},
        ).scalars()
        return [str(b) for b in rows]


def test_a_fresh_log_gets_a_random_key_and_records_its_id(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    log = open_audit(settings, db)
    assert log.pseudonym_key != log.signer.secret  # not derived from the signing key
    assert log.pseudonym_key == read_key(pseudonym_key_path(settings))
    [body] = recorded(db)
    assert f'"key_id":"{key_id(log.pseudonym_key)}"' in body
    again = open_audit(settings, db)  # a restart: same key, no second entry
    assert again.pseudonym_key == log.pseudonym_key and len(recorded(db)) == 1


def test_a_legacy_log_keeps_the_key_its_pseudonyms_were_made_under(
    db: Database, tmp_path: Path
) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    signer = open_signer(settings)
    AuditLog(db, signer, settings.audit.origin).append("request.begin", {}).result(30)
    log = open_audit(settings, db)  # entries, no pseudonym key recorded, no transition
    assert log.pseudonym_key == signer.secret
    assert len(recorded(db)) == 1


def test_a_missing_key_after_a_signing_rotation_is_refused(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    signer = open_signer(settings)
    legacy = AuditLog(db, signer, settings.audit.origin)
    legacy.key_file = key_path(settings)
    legacy.append("request.begin", {}).result(30)
    rotate_signing_key(legacy, key_path(settings), {"actor": ACTOR})
    with pytest.raises(PseudonymKeyError, match="restore the file") as err:
        open_audit(settings, db)
    assert str(pseudonym_key_path(settings)) in str(err.value)
    assert not pseudonym_key_path(settings).exists()


def test_a_missing_or_other_key_on_a_recording_log_is_refused(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    first = open_audit(settings, db).pseudonym_key
    path = pseudonym_key_path(settings)
    path.unlink()  # a fresh data folder, or a restore that lost it, on the same database
    with pytest.raises(PseudonymKeyError, match="restore the file"):
        open_audit(settings, db)
    other = tmp_path / "other.key"
    write_key(other, os.urandom(32))
    mounted = load_settings(None, data_dir=tmp_path / "data", privacy={"pseudonym_key_file": other})
    with pytest.raises(PseudonymKeyError, match=f"put the key with id {key_id(first)}") as err:
        open_audit(mounted, db)
    assert str(other) in str(err.value) and "\n" not in str(err.value)


def test_a_second_data_folder_follows_a_rotation_recorded_in_the_log(
    db: Database, tmp_path: Path
) -> None:
    """After a rotation the old key is refused: a stale copy would write old-epoch pseudonyms."""
    a = load_settings(None, data_dir=tmp_path / "a")
    log = open_audit(a, db)
    stale = log.pseudonym_key
    assert log.pseudonyms_retired is not None
    rotate_pseudonym_key(log, pseudonym_key_path(a), log.pseudonyms_retired, {"actor": ACTOR})
    b = load_settings(None, data_dir=tmp_path / "b")
    write_key(pseudonym_key_path(b), stale)
    with pytest.raises(PseudonymKeyError, match="is not the one the audit log records last"):
        open_audit(b, db)


def test_gateways_starting_together_read_one_whole_key(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    open_signer(settings)  # the signing key is not what this test races on
    barrier, keys, errors = threading.Barrier(8), [], []

    def start() -> None:
        barrier.wait(timeout=30)
        try:
            keys.append(open_audit(settings, db).pseudonym_key)
        except Exception as exc:  # the test fails on it, naming it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(set(keys)) == 1 and len(keys) == 8
    assert sorted(
        p.name
        for p in pseudonym_key_path(settings).parent.iterdir()
        if p.name.startswith("pseudonym")
    ) == ["pseudonym.key"]


def test_erasure_from_another_data_folder_reaches_every_epoch(db: Database, tmp_path: Path) -> None:
    """The retired key is kept in the database under the master key: a gateway that shares only
    the database (and the current keys) erases the subject's content of both epochs."""
    a = load_settings(None, data_dir=tmp_path / "a")
    log, vault = open_audit(a, db), open_vault(a, db)
    vault.store("r-old", erasure.subject_for(log, "alice", ""), "full", "prompt", "old epoch")
    vault.store("r-bob", erasure.subject_for(log, "bob", ""), "full", "prompt", "bob's")
    assert log.pseudonyms_retired is not None
    rotate_pseudonym_key(
        log, pseudonym_key_path(a), log.pseudonyms_retired, {"actor": ACTOR}, vault=vault
    )
    vault.store("r-new", erasure.subject_for(log, "alice", ""), "full", "prompt", "new epoch")
    b = load_settings(None, data_dir=tmp_path / "b")
    for path in (key_path, master_key_path, pseudonym_key_path):
        write_key(path(b), read_key(path(a)))
    other = open_audit(b, db)
    assert other.pseudonyms_retired is not None and not other.pseudonyms_retired.exists()
    receipt = erasure.erase(open_vault(b, db), other, "alice", ACTOR)
    assert receipt["content_records_made_unreadable"] == 2
    assert [c.text for c in vault.read("r-old")] == [None]
    assert [c.text for c in vault.read("r-new")] == [None]
    assert [c.text for c in vault.read("r-bob")] == ["bob's"]
    # Retention past the rotation purges the kept key: erasure still runs (nothing left).
    open_vault(b, db).purge(0, now=time.time() + 1)
    kept, purged = open_vault(b, db).retired_pseudonym_keys()
    assert kept == [] and len(purged) == 1
    erasure.erase(open_vault(b, db), other, "carol", ACTOR)


def test_erasure_without_every_epochs_key_is_refused(db: Database, tmp_path: Path) -> None:
    a = load_settings(None, data_dir=tmp_path / "a")
    log = open_audit(a, db)
    vault = open_vault(a, db)
    vault.store("r-old", erasure.subject_for(log, "alice", ""), "full", "prompt", "old epoch")
    assert log.pseudonyms_retired is not None
    # A rotation from before the database kept retired keys: only pseudonym.retired has it.
    rotate_pseudonym_key(log, pseudonym_key_path(a), log.pseudonyms_retired, {"actor": ACTOR})
    # A second gateway: its own data folder with the current keys, sharing only the database.
    b = load_settings(None, data_dir=tmp_path / "b")
    for path in (key_path, master_key_path, pseudonym_key_path):
        write_key(path(b), read_key(path(a)))
    other = open_audit(b, db)
    with pytest.raises(erasure.ErasureError, match=r"1 pseudonym key rotation.*only 0"):
        erasure.erase(open_vault(b, db), other, "alice", ACTOR)
    assert [c.text for c in vault.read("r-old")] == ["old epoch"]  # nothing erased
    receipt = erasure.erase(vault, log, "alice", ACTOR)  # where the rotation ran: both epochs
    assert [c.text for c in vault.read("r-old")] == [None]
    assert receipt["subject"].startswith("user:")


def test_a_receipt_is_signed_with_the_rotated_key(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    a, b = open_audit(settings, db), open_audit(settings, db)  # two gateways
    done = rotate_signing_key(a, key_path(settings), {"actor": ACTOR})
    assert b.signer.verifier.encode() == done.old_key  # b has not checkpointed since
    receipt = erasure.erase(open_vault(settings, db), b, "alice", ACTOR)
    assert receipt["verifier_key"] == done.new_key
    signed = {k: v for k, v in receipt.items() if k not in ("signature", "verifier_key")}
    public = Ed25519PublicKey.from_public_bytes(Verifier.decode(done.new_key).public)
    public.verify(base64.b64decode(receipt["signature"]), canonical(signed))  # raises if not


def test_loose_reports_side_files_and_retired_keys(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    audit = tmp_path / "data" / "audit"
    audit.mkdir(parents=True, mode=0o700)
    (tmp_path / "data").chmod(0o700)
    for name in ("pseudonym.retired", "master.key.next", "signing.key.next", "pseudonym.key.next"):
        (audit / name).write_text("x")
        (audit / name).chmod(0o644)
    found = "\n".join(loose(settings))
    for name in ("pseudonym.retired", "master.key.next", "signing.key.next", "pseudonym.key.next"):
        assert f"{audit / name} is open to group or others" in found


def sovllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_cli_refuses_a_wrong_pseudonym_key_in_one_line(tmp_path: Path) -> None:
    env = {
        "SOVLLM_DATA_DIR": str(tmp_path / "data"),
        "SOVLLM_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
    }
    assert sovllm(env, "privacy", "purge").returncode == 0
    path = tmp_path / "data" / "audit" / "pseudonym.key"
    path.unlink()
    write_key(path, os.urandom(32))
    out = sovllm(env, "privacy", "purge")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"the pseudonym key {path}" in out.stderr and "put the key with id" in out.stderr
    assert next_path(path).exists() is False
