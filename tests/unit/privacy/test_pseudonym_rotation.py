"""Pseudonym-key rotation: a new epoch in the audit log, a different pseudonym for the same user
(followed by a second gateway), the log still verifying, erasure reaching earlier epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import text

from sovllm.config import load_settings
from sovllm.governance.audit import keyed_hash, open_audit, pseudonym_key_path
from sovllm.governance.audit.verify import verify_database
from sovllm.governance.privacy import erasure
from sovllm.governance.privacy.content import open_vault
from sovllm.governance.privacy.masterkey import key_id, next_path, write_key
from sovllm.governance.privacy.pseudonyms import KIND, rotate_pseudonym_key
from sovllm.governance.records import record_of_processing
from sovllm.store.db import Database
from tests.conftest import wait_until

ACTOR = {"cli": "tester", "host": "here"}


def test_rotation_starts_an_epoch_followed_by_every_gateway(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    a, b = open_audit(settings, db), open_audit(settings, db)  # two gateways
    for log in (a, b):
        log.start()
    vault = open_vault(settings, db)
    before = keyed_hash(a, "user", b"alice")
    assert keyed_hash(b, "user", b"alice") == before
    vault.store("r-before", erasure.subject_for(a, "alice", ""), "full", "prompt", "old epoch")
    vault.store("r-bob", erasure.subject_for(a, "bob", ""), "full", "prompt", "bob's")
    a.append("request.begin", {"user": before}, "r-before").result(timeout=30)

    stop, written, errors = threading.Event(), [0], []

    def load() -> None:  # gateway b keeps writing pseudonymised entries and content
        while not stop.is_set():
            i = written[0]
            try:
                vault.store(
                    f"load-{i}",
                    erasure.subject_for(b, f"u{i % 5}", ""),
                    "full",
                    "prompt",
                    f"load {i}",
                )
                b.append("request.begin", {"user": keyed_hash(b, "user", b"u")}, f"load-{i}")
            except Exception as exc:  # the test fails on it, naming it
                errors.append(exc)
                return
            written[0] += 1

    thread = threading.Thread(target=load)
    thread.start()
    wait_until(lambda: written[0] >= 10 or errors, "the load's first writes", 30)
    assert a.pseudonyms_retired is not None
    done = rotate_pseudonym_key(
        a, pseudonym_key_path(settings), a.pseudonyms_retired, {"actor": ACTOR}
    )
    target = written[0] + 10
    wait_until(lambda: written[0] >= target or errors, "writes after the rotation", 30)
    stop.set()
    thread.join(timeout=60)
    assert not errors, errors
    after = keyed_hash(a, "user", b"alice")
    assert done.epoch == 1 and not done.resumed and after != before
    assert done.key_id == key_id(a.pseudonym_key)
    wait_until(lambda: keyed_hash(b, "user", b"alice") == after, "gateway b's new epoch", 10)
    assert os.stat(a.pseudonyms_retired).st_mode & 0o777 == 0o600
    vault.store("r-after", erasure.subject_for(b, "alice", ""), "full", "prompt", "new epoch")
    b.append("request.begin", {"user": after}, "r-after").result(timeout=30)

    # Erasure by the user's name reaches both epochs; bob is untouched.
    receipt = erasure.erase(vault, a, "alice", ACTOR)
    assert receipt["content_records_made_unreadable"] == 2
    assert [c.text for c in vault.read("r-before")] == [None]
    assert [c.text for c in vault.read("r-after")] == [None]
    assert [c.text for c in vault.read("r-bob")] == ["bob's"]
    assert all(c.text == f"load {i}" for i in range(written[0]) for c in vault.read(f"load-{i}"))

    for log in (a, b):
        log.close()
    report = verify_database(db, a.signer.verifier)
    assert report.ok, report.summary()
    with db.read() as s:
        body = s.scalar(text(f"SELECT body FROM audit_entries WHERE kind = '{KIND}'"))
    entry = json.loads(str(body))
    assert entry["actor"] == ACTOR and entry["epoch"] == 1 and entry["key_id"] == done.key_id
    record = record_of_processing(settings, db)
    assert "rotate-pseudonym-key" in record["keys"]["pseudonym_key"]


def test_interrupted_rotation_resumes_without_a_second_entry(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    log = open_audit(settings, db)
    path = pseudonym_key_path(settings)
    assert log.pseudonyms_retired is not None
    write_key(next_path(path), os.urandom(32))  # killed after step 1
    first = rotate_pseudonym_key(log, path, log.pseudonyms_retired, {"actor": ACTOR})
    assert first.resumed and first.epoch == 1 and not next_path(path).exists()
    # Killed after the entry, before the swap: the rerun only swaps.
    new = os.urandom(32)
    write_key(next_path(path), new)
    log.append(KIND, {"actor": ACTOR, "epoch": 2, "key_id": key_id(new)}).result(timeout=30)
    again = rotate_pseudonym_key(
        open_audit(settings, db), path, log.pseudonyms_retired, {"actor": ACTOR}
    )
    assert again.resumed and again.epoch == 2 and again.key_id == key_id(new)
    with db.read() as s:
        assert s.scalar(text(f"SELECT count(*) FROM audit_entries WHERE kind = '{KIND}'")) == 2
    assert key_id(open_audit(settings, db).pseudonym_key) == key_id(new)


def sovllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_cli_rotates_or_refuses_a_mounted_key(tmp_path: Path, database_url_any: str) -> None:
    env = {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "SOVLLM_DATABASE_URL": database_url_any}
    out = sovllm(env, "privacy", "rotate-pseudonym-key")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pseudonym epoch 1 ")
    env["SOVLLM_PRIVACY__PSEUDONYM_KEY_FILE"] = str(tmp_path / "data" / "audit" / "pseudonym.key")
    out = sovllm(env, "privacy", "rotate-pseudonym-key")
    assert out.returncode == 1 and "--new-key-file" in out.stderr
    assert "Traceback" not in out.stderr
