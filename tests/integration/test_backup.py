"""The restore drill: back up a live service under load, restore it elsewhere, and check that the
restored service is the same service (log, keys, erasures) and serves."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MODEL_ID, Server, run_server
from tests.postgres import create_database

PASSPHRASE = "drill-passphrase-0123"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SOVLLM_BACKUP_PASSPHRASE": PASSPHRASE, **env},
    )  # fmt: skip


def _chat(server: Server, key: str, user: str, text: str) -> str:
    """One chat whose content the tenant keeps; its request id."""
    r = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": MODEL_ID, "max_tokens": 4, "user": user,
              "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key}"}, timeout=120,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def _content(server: Server, key: str, request_id: str) -> list[str | None]:
    r = httpx.get(f"{server.url}/admin/v1/audit/content/{request_id}",
                  headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return [p["text"] for p in r.json()["parts"]]


def _entries(server: Server, kind: str) -> list[dict[str, object]]:
    """The newest audit entries of one kind, newest first."""
    r = server.admin("GET", "/audit/entries", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [e["entry"] for e in r.json()["data"] if e["entry"].get("kind") == kind]


class Load:
    """Streaming chats through the server, one after another per thread, until stopped."""

    def __init__(self, server: Server, key: str, threads: int = 2) -> None:
        self.client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        self.spans: list[tuple[float, float]] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.started = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                stream = self.client.chat.completions.create(
                    model=MODEL_ID, stream=True, max_tokens=48,
                    messages=[{"role": "user", "content": "Count slowly to fifty."}],
                )  # fmt: skip
                tokens = 0
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        tokens += 1
                        self.started.set()
                assert tokens > 0
            except BaseException as exc:
                self.errors.append(exc)
                return
            self.spans.append((start, time.monotonic()))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        assert self.started.wait(120), "no stream produced a token"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in self.threads)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_backup_under_load_restores_into_a_working_service(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    live_env: dict[str, str] = {}
    restored_env: dict[str, str] = {"SOVLLM_DATA_DIR": str(tmp_path / "restored" / "data")}
    if backend == "postgresql":
        pg = request.getfixturevalue("postgres_url")
        live_env["SOVLLM_DATABASE_URL"] = create_database(pg)
        restored_env["SOVLLM_DATABASE_URL"] = create_database(pg)
    backup = tmp_path / "drill.sovllm-backup"
    witness = tmp_path / "witness"
    with run_server(tmp_path / "live", env=live_env) as live:
        admin = live.api_key
        user_key = live.create_key("ward")
        assert live.admin("PATCH", "/tenants/ward",
                          json={"content_policy": "full"}).status_code == 200  # fmt: skip
        erased_id = _chat(live, user_key, "mario.rossi", "Hello, I am Mario.")
        kept_id = _chat(live, user_key, "luigi.verdi", "Hello, I am Luigi.")
        assert all(_content(live, admin, erased_id)) and all(_content(live, admin, kept_id))
        erase = cli(live.env or {}, "privacy", "erase", "--subject", "mario.rossi")
        assert erase.returncode == 0, erase.stderr
        assert not any(_content(live, admin, erased_id))
        # A witness's copy of a checkpoint, then the backup while chats stream.
        signed = cli(live.env or {}, "audit", "checkpoint", "--out", str(witness))
        assert signed.returncode == 0, signed.stderr
        with Load(live, user_key) as load:
            began = time.monotonic()
            taken = cli(live.env or {}, "backup", "--out", str(backup))
            ended = time.monotonic()
        assert taken.returncode == 0, taken.stderr
        assert not load.errors, load.errors
        assert any(s < ended and e > began for s, e in load.spans), "no chat overlapped it"
        # The backup is itself in the live log, with its actor and the file's digest.
        found = _entries(live, "store.backup")
        assert found and found[0]["actor"]["cli"] and found[0]["sha256"] in taken.stdout

    # Restore elsewhere: a new data directory (and a new, empty PostgreSQL database).
    restored = cli(
        restored_env, "restore", str(backup), "--data-dir", restored_env["SOVLLM_DATA_DIR"]
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "audit log: OK" in restored.stdout
    verify = cli(restored_env, "audit", "verify", "--against", str(next(witness.iterdir())))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK")
    with run_server(tmp_path / "restored", env=restored_env) as again:
        assert again.api_key == ""  # the restored database has its keys: no new bootstrap key
        # The same keys authenticate: the admin's and the user's.
        again.api_key = admin
        assert again.admin("GET", "/tenants").status_code == 200
        client = openai.OpenAI(base_url=again.base_url, api_key=user_key, max_retries=0)
        answer = client.chat.completions.create(
            model=MODEL_ID, max_tokens=8, messages=[{"role": "user", "content": "Hello"}]
        )
        assert answer.choices[0].message.content
        # The erased subject stays erased; the other's content opens under the restored key.
        assert not any(_content(again, admin, erased_id))
        assert all(_content(again, admin, kept_id))
        # The restore is in the restored log, with its actor.
        done = _entries(again, "store.restore")
        assert done and done[0]["actor"]["cli"] and done[0]["file"] == str(backup)


def test_restore_refuses_a_wrong_passphrase_a_damaged_file_and_a_used_folder(
    tmp_path: Path,
) -> None:
    live = {"SOVLLM_DATA_DIR": str(tmp_path / "live")}
    made = cli(live, "tenants", "create", "acme")
    assert made.returncode == 0, made.stderr
    backup = tmp_path / "b.sovllm-backup"
    assert cli(live, "backup", "--out", str(backup)).returncode == 0
    again = cli(live, "backup", "--out", str(backup))
    assert again.returncode == 2 and "does not overwrite" in again.stderr
    target = tmp_path / "target"

    wrong = cli({"SOVLLM_BACKUP_PASSPHRASE": "not-the-passphrase"}, "restore", str(backup),
                "--data-dir", str(target))  # fmt: skip
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    assert not target.exists()  # a failed restore leaves nothing behind

    data = bytearray(backup.read_bytes())
    data[-40] ^= 0x01
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(data))
    bad = cli({}, "restore", str(damaged), "--data-dir", str(target))
    assert bad.returncode == 1 and "damaged" in bad.stderr and not target.exists()

    cut = tmp_path / "cut"
    cut.write_bytes(backup.read_bytes()[:-10])
    short = cli({}, "restore", str(cut), "--data-dir", str(target))
    assert short.returncode == 1 and "cut off" in short.stderr and not target.exists()

    other = tmp_path / "other"
    other.write_bytes(b"PK\x03\x04 not a backup")
    foreign = cli({}, "restore", str(other), "--data-dir", str(target))
    assert foreign.returncode == 1 and "not a sovllm backup" in foreign.stderr

    target.mkdir()
    (target / "sovllm.db").write_bytes(b"")
    used = cli({}, "restore", str(backup), "--data-dir", str(target))
    assert used.returncode == 1 and "not empty" in used.stderr
    assert (target / "sovllm.db").read_bytes() == b""  # untouched

    short_pass = cli({"SOVLLM_BACKUP_PASSPHRASE": "short"}, "backup", "--out", str(tmp_path / "x"))
    assert short_pass.returncode == 2 and "at least" in short_pass.stderr

    fine = cli({}, "restore", str(backup), "--data-dir", str(tmp_path / "fine"))
    assert fine.returncode == 0, fine.stderr
    listed = cli({"SOVLLM_DATA_DIR": str(tmp_path / "fine")}, "tenants", "list")
    assert "acme" in listed.stdout
