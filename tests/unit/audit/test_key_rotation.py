"""Signing-key rotation: a transition checkpoint signed by both keys, followed by a second
gateway, verifiable from either key (database and export), resumable; pseudonyms unchanged."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from sovllm.config import load_settings
from sovllm.governance.audit import key_path, keyed_hash, merkle, open_audit, pseudonym_key_path
from sovllm.governance.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    parse,
    verify,
)
from sovllm.governance.audit.export import export_lines, verify_export
from sovllm.governance.audit.keys import rotate_signing_key
from sovllm.governance.audit.log import KEY_KIND
from sovllm.governance.audit.lookup import inclusion
from sovllm.governance.audit.verify import verify_database
from sovllm.governance.privacy.masterkey import write_key
from sovllm.store.db import Database
from tests.conftest import wait_until

ACTOR = {"cli": "tester", "host": "here"}


class Gateways:
    """Two processes' worth of audit logs on one database and data folder, appending from
    threads until stopped."""

    def __init__(self, db: Database, data_dir: Path) -> None:
        self.settings = load_settings(None, data_dir=data_dir)
        self.logs = [open_audit(self.settings, db) for _ in range(2)]
        for log in self.logs:
            log.checkpoint_every = 7
            log.start()
        self.old = self.logs[0].signer.verifier
        self.count = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(4)]

    def _run(self, n: int) -> None:
        log, i = self.logs[n % 2], 0
        while not self._stop.is_set():
            try:
                log.append("test.load", {"n": n, "i": i}, f"load-{n}-{i}").result(timeout=30)
            except BaseException as exc:  # the test fails on it, naming it
                self.errors.append(exc)
                return
            self.count += 1  # one writer per n: a lost increment only delays `more`
            i += 1

    def start(self) -> None:
        for t in self._threads:
            t.start()
        self.more(20)

    def more(self, n: int) -> None:
        target = self.count + n
        wait_until(lambda: self.count >= target or self.errors, f"{n} more entries", 60)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=60)
        for log in self.logs:
            log.close()
        assert not self.errors, self.errors


@pytest.fixture
def gateways(db: Database, tmp_path: Path) -> Iterator[Gateways]:
    g = Gateways(db, tmp_path / "data")
    g.logs[0].append("request.begin", {"who": "before"}, "before").result(timeout=30)
    yield g
    g._stop.set()


def test_rotation_under_load_is_followed_and_verifies_from_either_key(
    gateways: Gateways, db: Database
) -> None:
    g = gateways
    pseudonym = keyed_hash(g.logs[0], "user", b"alice")
    g.start()
    done = rotate_signing_key(g.logs[0], key_path(g.settings), {"actor": ACTOR})
    g.more(60)  # both gateways sign checkpoints after the transition
    g.stop()
    new = Verifier.decode(done.new_key)
    assert done.old_key == g.old.encode() and new != g.old and not done.resumed
    assert g.logs[1].signer.verifier == new  # the second gateway followed
    assert Signer.load(key_path(g.settings), g.settings.audit.origin).verifier == new
    assert not key_path(g.settings).with_name("signing.key.next").exists()

    with db.read() as s:
        notes = [str(n) for (n,) in s.execute(text("SELECT note FROM audit_checkpoints"))]
        body = s.scalar(text(f"SELECT body FROM audit_entries WHERE seq = {done.entry}"))
    entry = json.loads(str(body))
    assert entry["kind"] == KEY_KIND and entry["actor"] == ACTOR
    transition = [n for n in notes if parse(n)[0].size == done.entry + 1]
    assert len(transition) == 1 and len(parse(transition[0])[1]) == 2
    verify(transition[0], g.old), verify(transition[0], new)
    after = [n for n in notes if parse(n)[0].size > done.entry + 1]
    assert after and all(len(parse(n)[1]) == 1 for n in after)

    for key in (g.old, new):
        report = verify_database(db, key)
        assert report.ok and report.checkpoints == len(notes), report.summary()
        lines = list(export_lines(db, None, new))
        assert verify_export(lines, key).ok
    # An export from after the transition carries it in its header: the old key still reaches.
    full = [json.loads(line) for line in export_lines(db, None, new)][1:]
    since = max(e["at"] for e in full if e.get("seq", 1e9) <= done.entry) + 1e-3
    lines = list(export_lines(db, since, new))
    assert json.loads(lines[0])["prefix_key_transitions"][0]["seq"] == done.entry
    report = verify_export(lines, g.old)
    assert report.ok, report.summary()

    # A proof of an entry from before the transition, in the tree the new key signed.
    proof = inclusion(db, "before")
    cp = verify(str(proof["checkpoint"]), new)
    (e,) = proof["entries"]  # type: ignore[misc]
    assert cp.size > done.entry and cp.root.hex() == proof["root_hash"]
    assert merkle.verify_inclusion(
        e["seq"],
        cp.size,
        bytes.fromhex(e["leaf_hash"]),
        [bytes.fromhex(p) for p in e["proof"]],
        cp.root,
    )

    # Pseudonyms did not change: their key is its own file, made from the old derivation.
    assert keyed_hash(open_audit(g.settings, db), "user", b"alice") == pseudonym
    derived = hmac.new(g.logs[0].pseudonym_key, b"user", hashlib.sha256).digest()
    assert hmac.new(derived, b"alice", hashlib.sha256).hexdigest() == pseudonym
    assert os.stat(pseudonym_key_path(g.settings)).st_mode & 0o777 == 0o600


def test_a_retired_key_signing_after_the_transition_fails(gateways: Gateways, db: Database) -> None:
    g = gateways
    old_signer = g.logs[0].signer
    done = rotate_signing_key(g.logs[0], key_path(g.settings), {"actor": ACTOR})
    g.logs[0].append("request.begin", {}, "after").result(timeout=30)
    g.stop()
    assert verify_database(db, g.old).ok
    with db.read() as s:
        leaves = [
            bytes.fromhex(h)
            for (h,) in s.execute(text("SELECT leaf_hash FROM audit_entries ORDER BY seq"))
        ]
    forged = old_signer.sign(Checkpoint(g.settings.audit.origin, len(leaves), merkle.root(leaves)))
    for key in (g.old, Verifier.decode(done.new_key)):
        report = verify_database(db, key, against=forged)
        assert not report.ok and "carries no signature of" in report.summary()
    # A transition whose dual-signed checkpoint is gone breaks the chain from the old key.
    with db.transaction() as s:
        s.execute(text(f"DELETE FROM audit_checkpoints WHERE size = {done.entry + 1}"))
    report = verify_database(db, g.old)
    assert not report.ok and f"transition at entry {done.entry}" in report.summary()


def test_a_transition_forged_without_the_current_key_fails_for_every_key(
    gateways: Gateways, db: Database
) -> None:
    """Whoever can write the database but holds none of the log's keys cannot hand the log to a
    key of their own: a transition needs a checkpoint signed by both keys, whichever key the
    verifier trusts."""
    g = gateways
    done = rotate_signing_key(g.logs[0], key_path(g.settings), {"actor": ACTOR})
    g.stop()
    log, current = g.logs[0], Verifier.decode(done.new_key)
    mallory = Signer(g.settings.audit.origin, Ed25519PrivateKey.generate())
    log.append(
        KEY_KIND,
        {"actor": ACTOR, "old_key": current.encode(), "new_key": mallory.verifier.encode()},
    ).result(timeout=30)
    log.append("request.begin", {"who": "forged"}, "forged").result(timeout=30)
    # Mallory signs the tree head with her key alone and stores it (the log itself would not
    # sign on from a checkpoint no key of its own signed).
    with db.transaction() as s:
        leaves = [
            bytes.fromhex(h)
            for (h,) in s.execute(text("SELECT leaf_hash FROM audit_entries ORDER BY seq"))
        ]
        compact: merkle.Compact = []
        merkle.extend(compact, leaves)
        root = merkle.compact_root(compact)
        s.execute(
            text(
                "INSERT INTO audit_checkpoints (size, root, note, compact) "
                "VALUES (:size, :root, :note, :compact)"
            ),
            {
                "size": len(leaves),
                "root": root.hex(),
                "note": mallory.sign(Checkpoint(g.settings.audit.origin, len(leaves), root)),
                "compact": json.dumps([[n, h.hex()] for n, h in compact]),
            },
        )
    for key in (g.old, current):
        report = verify_database(db, key)
        assert not report.ok, key.encode()
        assert "has no checkpoint signed by both keys" in report.summary(), report.problems
        assert not verify_export(list(export_lines(db, None, key)), key).ok


def test_a_rotation_interrupted_after_its_transition_only_swaps_the_file(
    gateways: Gateways, db: Database
) -> None:
    g = gateways
    path = key_path(g.settings)
    side = path.with_name("signing.key.next")
    seed = os.urandom(32)
    write_key(side, seed)  # step 1 of a run that was killed before step 2
    done = rotate_signing_key(g.logs[0], path, {"actor": ACTOR})
    assert (
        done.resumed
        and Signer.load(path, "x").verifier.public == Verifier.decode(done.new_key).public
    )
    # Killed between the transition and the swap: the rerun does not add a second transition.
    seed2 = os.urandom(32)
    write_key(side, seed2)
    g.logs[0].rotate_key(Signer.load(side, g.settings.audit.origin), {"actor": ACTOR})
    fresh = open_audit(g.settings, db)  # a process started now reads the old file
    again = rotate_signing_key(fresh, path, {"actor": ACTOR})
    assert again.resumed and again.old_key == done.new_key and not side.exists()
    g.stop()
    with db.read() as s:
        kinds = s.scalar(text(f"SELECT count(*) FROM audit_entries WHERE kind = '{KEY_KIND}'"))
    assert kinds == 2
    assert verify_database(db, g.old).ok and verify_database(db, fresh.signer.verifier).ok


def test_a_gateway_without_the_new_key_signs_nothing(gateways: Gateways, db: Database) -> None:
    g = gateways
    other = key_path(g.settings).with_name("elsewhere.key")
    write_key(other, os.urandom(32))
    g.logs[1].key_file = other  # a gateway whose key file is not the rotated one
    rotate_signing_key(g.logs[0], key_path(g.settings), {"actor": ACTOR})
    g.logs[1].append("request.begin", {}, "stale").result(timeout=30)
    with pytest.raises(CheckpointError, match="restart it with the new key"):
        g.logs[1].checkpoint()
    g.logs[1].key_file = key_path(g.settings)  # restarted with the new key: it follows
    g.stop()
    assert g.logs[1].signer.verifier == g.logs[0].signer.verifier
    assert verify_database(db, g.old).ok


def sovllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_cli_rotates_and_verify_accepts_either_key(tmp_path: Path, database_url_any: str) -> None:
    env = {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "SOVLLM_DATABASE_URL": database_url_any}
    old = sovllm(env, "audit", "key").stdout.strip()
    out = sovllm(env, "audit", "rotate-signing-key")
    assert out.returncode == 0, out.stderr
    assert f"old verifier key: {old}" in out.stdout
    for args in ([], ["--key", old]):
        out = sovllm(env, "audit", "verify", *args)
        assert out.returncode == 0, out.stdout + out.stderr
    env["SOVLLM_AUDIT__KEY_FILE"] = str(tmp_path / "data" / "audit" / "signing.key")
    out = sovllm(env, "audit", "rotate-signing-key")
    assert out.returncode == 1 and "--new-key-file" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_verifier_key_with_a_plus_in_its_base64_decodes() -> None:
    """Base64 has '+': the key text splits on the first two only (names and hashes have none)."""
    v = Verifier("sovllm", b"\xfb" * 32)
    assert "+" in v.encode().split("+", 2)[2]
    assert Verifier.decode(v.encode()) == v
