"""`sovllm privacy erase`: the subject's wrapped key is gone from every byte SQLite keeps."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from sovllm.config import load_settings
from sovllm.governance.audit import open_audit
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.privacy import erasure
from sovllm.governance.privacy.content import ContentVault, open_vault
from sovllm.store.db import SQLITE_FILE, Database, database_url
from sovllm.store.migrate import upgrade


def encodings(stored: str) -> list[bytes]:
    """The key as the column holds it (base64 text), and the bytes that text decodes to, should
    any copy of it have been kept decoded."""
    return [stored.encode(), base64.b64decode(stored)]


def sqlite_bytes(data_dir: Path) -> bytes:
    """Everything SQLite keeps on disk for the database: the file, its WAL and shared memory."""
    files = [data_dir / f"{SQLITE_FILE}{suffix}" for suffix in ("", "-wal", "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def sovllm_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOVLLM_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@dataclass
class Kept:
    """A data directory with content for 42 subjects, open as a running server keeps it."""

    data_dir: Path
    db: Database
    audit: AuditLog
    vault: ContentVault
    keys: dict[str, str]
    """subject -> wrapped key as stored"""

    def subject(self, person: str) -> str:
        return erasure.subject_for(self.audit, person, "")

    def close(self) -> None:
        self.audit.close()
        self.db.dispose()


def keep_content(data_dir: Path, on_connect: Callable[[Any, Any], None] | None = None) -> Kept:
    settings = load_settings(None, data_dir=data_dir)
    # Stands for a running server: it keeps the database open, so SQLite never gets to the
    # checkpoint it makes when the last connection closes, and the WAL stays.
    db = Database(database_url(None, data_dir))
    if on_connect is not None:  # runs before the service's own settings on each connection
        for engine in (db.engine, db._read_engine):
            event.listen(engine, "connect", on_connect, insert=True)
    upgrade(db)
    audit = open_audit(settings, db)
    vault = open_vault(settings, db)
    for i, person in enumerate(["alice", "bob", *(f"user{i}" for i in range(40))]):
        sid = erasure.subject_for(audit, person, "")
        for part in ("prompt", "response"):
            vault.store(f"r{i}", sid, "full", part, f"{part} of {person}")
    with db.read() as s:
        rows = s.execute(text("SELECT subject, wrapped_key FROM subject_keys")).all()
    kept = Kept(data_dir, db, audit, vault, {str(sid): str(key) for sid, key in rows})
    before = sqlite_bytes(data_dir)
    for person in ("alice", "bob"):
        assert kept.keys[kept.subject(person)].encode() in before  # the scan sees keys
    return kept


def assert_only_alice_is_gone(kept: Kept) -> None:
    after = sqlite_bytes(kept.data_dir)
    for needle in encodings(kept.keys[kept.subject("alice")]):
        assert needle not in after, "the erased key's bytes are still on disk"
    assert kept.keys[kept.subject("bob")].encode() in after  # only the subject named is erased
    assert [c.text for c in kept.vault.read("r0")] == [None, None]
    assert [c.text for c in kept.vault.read("r1")] == ["prompt of bob", "response of bob"]


def secure_delete_off(dbapi_conn: Any, _record: Any) -> None:
    """What a SQLite built without SQLITE_SECURE_DELETE does by default (Debian's has it on)."""
    dbapi_conn.execute("PRAGMA secure_delete=OFF")


def test_erasure_in_a_running_server_leaves_no_byte_of_the_key_on_disk(tmp_path: Path) -> None:
    # The admin API's path: the database stays open. Old page images in the WAL, and the old
    # cell in its page where the SQLite build does not zero deleted content, must both go.
    kept = keep_content(tmp_path / "data", on_connect=secure_delete_off)
    receipt = erasure.erase(kept.vault, kept.audit, "alice", {"cli": "dpo"})
    assert receipt["content_records_made_unreadable"] == 2
    assert receipt["old_key_bytes"].startswith("nowhere"), receipt
    assert_only_alice_is_gone(kept)
    kept.close()


def test_privacy_erase_cli_leaves_no_byte_of_the_key_on_disk(tmp_path: Path) -> None:
    kept = keep_content(tmp_path / "data")

    run = sovllm_cli(kept.data_dir, "privacy", "erase", "--subject", "alice")

    assert run.returncode == 0, run.stderr
    receipt = json.loads(run.stdout)
    assert receipt["subject"] == kept.subject("alice")
    assert receipt["content_records_made_unreadable"] == 2
    assert receipt["old_key_bytes"].startswith("nowhere"), receipt
    assert receipt["signature"] and receipt["audit_entry"] >= 0
    assert_only_alice_is_gone(kept)
    verify = sovllm_cli(kept.data_dir, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    kept.close()


def test_privacy_erase_names_a_bad_configuration_without_a_trace(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("retention:\n  audit_days: 30\n")
    run = sovllm_cli(
        tmp_path / "data",
        "privacy",
        "erase",
        "--subject",
        "alice",
        "--config",
        str(tmp_path / "bad.toml"),
    )
    assert run.returncode == 2
    assert "retention.audit_days" in run.stderr and "Traceback" not in run.stderr
