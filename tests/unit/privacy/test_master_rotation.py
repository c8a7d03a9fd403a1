"""Master-key rotation: every subject key re-wrapped under a new master while content is stored
and the audit log appended; interrupted, it resumes; erased subjects stay erased."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_database
from sovllm.governance.privacy.content import ContentVault, load_or_create_master
from sovllm.governance.privacy.masterkey import (
    MasterKeyError,
    MasterKeys,
    Rotated,
    key_id,
    next_path,
    read_key,
    rewrap,
    rotate,
    write_key,
)
from sovllm.store.db import Database
from sovllm.store.migrate import upgrade
from tests.conftest import fresh_database_url, wait_until


def open_vault(path: Path, db: Database) -> ContentVault:
    """As `open_vault` opens the default key file (a fresh process: it knows only the file)."""
    return ContentVault(db, load_or_create_master(path), path)


@dataclass
class Kept:
    db: Database
    key_file: Path
    vault: ContentVault
    audit: AuditLog
    texts: dict[tuple[str, str], str] = field(default_factory=dict)
    """(request id, part) -> the text stored"""
    erased: str = "user:erased"

    def reads_back(self, vault: ContentVault) -> None:
        """Every text stored so far reads back as stored (a snapshot: the load may still run;
        list() of a dict is one step under the GIL)."""
        expected: dict[tuple[str, str], str | None] = {k: self.texts[k] for k in list(self.texts)}
        found: dict[tuple[str, str], str | None] = {}
        for rid in {rid for rid, _ in expected}:
            for c in vault.read(rid):
                found[(c.request_id, c.part)] = c.text
        assert found == expected

    def wrapped(self) -> dict[str, tuple[str | None, str | None]]:
        with self.db.read() as s:
            rows = s.execute(text("SELECT subject, wrapped_key, master_id FROM subject_keys"))
            return {str(r[0]): (r[1], r[2]) for r in rows}


@pytest.fixture
def kept(db: Database, tmp_path: Path) -> Iterator[Kept]:
    """30 subjects with content, one erased, on a key file from before master ids (NULL)."""
    key_file = tmp_path / "audit" / "master.key"
    signer = Signer.load_or_create(tmp_path / "audit" / "signing.key", "test.example/log")
    audit = AuditLog(db, signer, "test.example/log", checkpoint_every=50)
    audit.start()
    k = Kept(db, key_file, open_vault(key_file, db), audit)
    for i in range(30):
        for part in ("prompt", "response"):
            k.vault.store(f"r{i}", f"user:{i}", "full", part, f"{part} {i}")
            k.texts[(f"r{i}", part)] = f"{part} {i}"
    k.vault.store("gone", k.erased, "full", "prompt", "erase me")
    k.vault.erase(k.erased)
    with db.transaction() as s:  # rows as revision 0006 left them
        s.execute(text("UPDATE subject_keys SET master_id = NULL"))
    yield k
    audit.close()


class Load:
    """Threads storing content (new and known subjects) and appending audit entries."""

    def __init__(self, k: Kept, threads: int = 3) -> None:
        self.k = k
        self.count = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def _run(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            rid, subject = f"load-{n}-{i}", f"user:{i % 40}" if i % 2 else f"user:new-{n}-{i}"
            try:
                self.k.vault.store(rid, subject, "full", "prompt", f"load {n} {i}")
                self.k.audit.append("test.load", {"n": n, "i": i}, rid).result(timeout=30)
            except BaseException as exc:  # the test fails on it, naming it
                self.errors.append(exc)
                return
            with self._lock:
                self.k.texts[(rid, "prompt")] = f"load {n} {i}"
                self.count += 1
            i += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        wait_until(lambda: self.count >= 20 or self.errors, "the load's first writes", 60)
        return self

    def more(self, n: int) -> None:
        """Wait until n more writes are done (so some run after the rotation)."""
        target = self.count + n
        wait_until(lambda: self.count >= target or self.errors, f"{n} more writes", 60)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        assert not self.errors, self.errors


def check_after(k: Kept, new_id: str) -> None:
    """Every live key under the new master, the old key gone, content readable (by the running
    vault and by a fresh process), the erased subject still erased, the log verifying."""
    rows = k.wrapped()
    assert rows[k.erased] == (None, None)
    assert {mid for sub, (w, mid) in rows.items() if sub != k.erased} == {new_id}
    assert key_id(read_key(k.key_file)) == new_id and not next_path(k.key_file).exists()
    for vault in (k.vault, open_vault(k.key_file, k.db)):
        k.reads_back(vault)
        assert [c.text for c in vault.read("gone")] == [None]
    k.audit.close()
    report = verify_database(k.db, k.audit.signer.verifier)
    assert report.ok, report.summary()


def test_rotation_under_load_rewraps_every_live_key(kept: Kept) -> None:
    old = read_key(kept.key_file)
    with Load(kept) as load:
        done = rotate(kept.db, kept.key_file)
        load.more(20)
    assert done.old_id == key_id(old) and done.new_id != done.old_id and not done.resumed
    assert done.rewrapped >= 30  # the 30 from before, and what the load made meanwhile
    check_after(kept, done.new_id)


def test_interrupted_rotation_resumes(kept: Kept) -> None:
    old = read_key(kept.key_file)

    def crash(n: int) -> None:
        if n == 10:
            raise KeyboardInterrupt  # killed halfway through the re-wrap

    with Load(kept) as load:
        with pytest.raises(KeyboardInterrupt):
            rotate(kept.db, kept.key_file, on_row=crash)
        load.more(10)
        # Nothing was re-wrapped (one transaction), the old key is still the file's, the new
        # one waits beside it, and a fresh process still reads everything.
        assert read_key(kept.key_file) == old
        pending = read_key(next_path(kept.key_file))
        kept.reads_back(open_vault(kept.key_file, kept.db))
        done = rotate(kept.db, kept.key_file)
        load.more(10)
    assert done.resumed and done.new_id == key_id(pending) and done.old_id == key_id(old)
    check_after(kept, done.new_id)


def test_rotation_stopped_before_the_swap_resumes(kept: Kept) -> None:
    """Re-wrapped but killed before the rename: a fresh process opens master.key (the old key)
    and finds the rows under the new one, in master.key.next; the rerun only renames."""
    old = read_key(kept.key_file)
    new = os.urandom(32)
    write_key(next_path(kept.key_file), new)
    assert rewrap(kept.db, MasterKeys(old, kept.key_file), new) == 30
    kept.reads_back(open_vault(kept.key_file, kept.db))
    done = rotate(kept.db, kept.key_file)
    assert done.resumed and done.rewrapped == 0 and done.new_id == key_id(new)
    check_after(kept, key_id(new))


def test_a_key_under_an_unknown_master_is_a_clear_error(kept: Kept) -> None:
    with kept.db.transaction() as s:
        s.execute(text("UPDATE subject_keys SET master_id = 'feedfacefeedface'"))
    with pytest.raises(MasterKeyError, match="master key feedfacefeedface"):
        kept.vault.read("r1")
    with pytest.raises(MasterKeyError, match="feedfacefeedface"):
        rotate(kept.db, kept.key_file)


def test_the_record_is_written_before_the_swap(kept: Kept) -> None:
    """The audit entry goes in before master.key.next replaces master.key: a rotation that dies
    writing it has not swapped, and the rerun records it (no completed rotation without it)."""
    old = read_key(kept.key_file)
    seen: list[Rotated] = []

    def fail(done: Rotated) -> None:
        raise OSError("the audit entry could not be written")

    with pytest.raises(OSError, match="could not be written"):
        rotate(kept.db, kept.key_file, before_swap=fail)
    assert read_key(kept.key_file) == old and next_path(kept.key_file).exists()
    done = rotate(kept.db, kept.key_file, before_swap=seen.append)
    assert seen == [done] and done.resumed and next_path(kept.key_file).exists() is False
    check_after(kept, done.new_id)


def test_a_gateway_with_a_superseded_mounted_master_wraps_nothing(
    kept: Kept, tmp_path: Path
) -> None:
    """A mounted master rotated with --new-key-file while a gateway kept running: that gateway
    must not wrap a new subject's key under the old master (lost once the secret is swapped)."""
    running = ContentVault(kept.db, read_key(kept.key_file))  # a mounted key: no file to follow
    new = tmp_path / "new.key"
    write_key(new, os.urandom(32))
    rotate(kept.db, kept.key_file, new_key_file=new)
    with pytest.raises(
        MasterKeyError, match=f"subject keys are under master key {key_id(read_key(new))}"
    ):
        running.store("r-new", "user:new-subject", "full", "prompt", "would be lost")
    assert "user:new-subject" not in kept.wrapped()
    fresh = ContentVault(kept.db, read_key(new))  # restarted with the new key: works
    assert fresh.store("r-new", "user:new-subject", "full", "prompt", "kept")
    assert [c.text for c in fresh.read("r-new")] == ["kept"]


def sovllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_cli_rotates_and_records_who(tmp_path: Path, database_url_any: str) -> None:
    env = {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "SOVLLM_DATABASE_URL": database_url_any}
    out = sovllm(env, "privacy", "rotate-master-key")
    assert out.returncode == 0, out.stderr
    assert "re-wrapped 0 subject key(s)" in out.stdout
    db = Database(database_url_any)
    try:
        with db.read() as s:
            body = s.scalar(
                text("SELECT body FROM audit_entries WHERE kind = 'privacy.master_key_rotated'")
            )
        assert body is not None and '"cli":' in body and '"new_key":' in body
    finally:
        db.dispose()


def test_cli_refuses_a_mounted_master_key(tmp_path: Path, database_url_any: str) -> None:
    secret = tmp_path / "secret.key"
    secret.write_text("A" * 43 + "=\n")
    secret.chmod(0o400)
    env = {
        "SOVLLM_DATA_DIR": str(tmp_path / "data"),
        "SOVLLM_DATABASE_URL": database_url_any,
        "SOVLLM_PRIVACY__MASTER_KEY_FILE": str(secret),
    }
    out = sovllm(env, "privacy", "rotate-master-key")
    assert out.returncode == 1
    assert f"privacy.master_key_file {secret}" in out.stderr and "--new-key-file" in out.stderr
    assert "Traceback" not in out.stderr
    new = tmp_path / "new.key"
    new.write_text("B" * 43 + "=\n")
    out = sovllm(env, "privacy", "rotate-master-key", "--new-key-file", str(new))
    assert out.returncode == 0, out.stderr
    assert f"point privacy.master_key_file at {new}" in out.stdout
    assert secret.read_text() == "A" * 43 + "=\n"


def test_a_subject_erased_during_the_rewrap_stays_erased(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL lets an erasure commit while the re-wrap runs (it locks only rows it has
    updated): the re-wrap must not write the erased subject's key back. (On SQLite the erasure
    waits for the re-wrap's write lock, so this cannot happen there.)"""
    db = Database(fresh_database_url("postgresql", tmp_path, postgres_url))
    upgrade(db)
    try:
        key_file = tmp_path / "master.key"
        vault = open_vault(key_file, db)
        for i in range(5):
            vault.store(f"r{i}", f"user:{i}", "full", "prompt", f"text {i}")
        erased: list[object] = []

        def erase_the_last(n: int) -> None:
            if n == 1:  # user:0 done, user:4 (the last, by subject) read but not yet updated
                t = threading.Thread(target=lambda: erased.append(vault.erase("user:4")))
                t.start()
                t.join(timeout=30)
                assert erased, "the erasure did not commit during the re-wrap"

        done = rotate(db, key_file, on_row=erase_the_last)
        assert done.rewrapped == 4
        assert [c.text for c in open_vault(key_file, db).read("r4")] == [None]
        assert [c.text for c in open_vault(key_file, db).read("r3")] == ["text 3"]
        with db.read() as s:
            assert (
                s.scalar(text("SELECT wrapped_key FROM subject_keys WHERE subject = 'user:4'"))
                is None
            )
    finally:
        db.dispose()


def test_cli_failed_rewrap_says_keep_the_side_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SOVLLM_DATA_DIR": str(data), "SOVLLM_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    db = Database(env["SOVLLM_DATABASE_URL"])
    try:
        upgrade(db)
        vault = open_vault(data / "audit" / "master.key", db)
        vault.store("r1", "user:1", "full", "prompt", "text")
        with db.transaction() as s:
            s.execute(text("UPDATE subject_keys SET master_id = 'feedfacefeedface'"))
    finally:
        db.dispose()
    out = sovllm(env, "privacy", "rotate-master-key")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "the master key was not rotated" in out.stderr and "feedfacefeedface" in out.stderr
    assert f"do not delete {data / 'audit' / 'master.key.next'}" in out.stderr
    assert "fix the cause and rerun" in out.stderr
