"""Retention as the live job of a real server, and as `sovllm privacy purge`: audit entries past
audit_days lose their bodies (the log still verifies, proofs say when and why), usage days past
usage_days roll up into months that the usage report still shows."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.store.db import Database
from sovllm.store.migrate import upgrade
from tests.conftest import Server, run_server, wait_until

DAY = 86400.0
OLD = time.time() - 300 * DAY  # past the shortest audit retention the settings allow (183)


def sovllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip


def write_old_entries(data_dir: Path, n: int) -> None:
    """Entries written 300 days ago, by the log the server will open (same key and origin)."""
    db = Database(f"sqlite:///{data_dir / 'sovllm.db'}")
    try:
        upgrade(db)
        signer = Signer.load_or_create(data_dir / "audit" / "signing.key", "sovllm")
        log = AuditLog(db, signer, "sovllm", clock=lambda: OLD)
        for i in range(n):
            log.append("request.begin", {"i": i}, f"old-{i}").result()
        # A failed sign-in too: the console's list of them must read past its pruned body.
        log.append("access.denied", {"count": 1}).result()
        log.checkpoint()
    finally:
        db.dispose()


def old_usage(server: Server) -> None:
    """Usage of the admin key on days long past usage_days (as settlement would write it)."""
    with sqlite3.connect(server.data_dir / "sovllm.db", timeout=30) as conn:
        key_id, tenant_id = conn.execute("SELECT id, tenant_id FROM api_keys").fetchone()
        conn.executemany(
            "INSERT INTO usage_daily (day, key_id, tenant_id, requests, prompt_tokens, "
            "completion_tokens) VALUES (?, ?, ?, ?, ?, ?)",
            [("2024-03-01", key_id, tenant_id, 2, 100, 10),
             ("2024-03-15", key_id, tenant_id, 3, 50, 5)],
        )  # fmt: skip


def pruned(server: Server) -> int:
    with sqlite3.connect(server.data_dir / "sovllm.db", timeout=30) as conn:
        (n,) = conn.execute("SELECT count(*) FROM audit_entries WHERE body IS NULL").fetchone()
    return int(n)


def test_the_live_job_prunes_the_log_and_rolls_up_usage(tmp_path: Path) -> None:
    write_old_entries(tmp_path / "data", 2)
    env = {"SOVLLM_RETENTION__AUDIT_DAYS": "183", "SOVLLM_RETENTION__USAGE_DAYS": "31",
           "SOVLLM_RETENTION__PURGE_EVERY_S": "0.2"}  # fmt: skip
    with run_server(tmp_path, env) as srv:
        assert srv.api_key  # the entries alone are no keys: the server bootstrapped its admin
        old_usage(srv)
        # Waits on the database the job writes, with a deadline.
        wait_until(lambda: pruned(srv) == 3, "the job to prune the three old entries", 30)

        def months() -> list[dict[str, object]]:
            data = srv.admin("GET", "/usage").json()["data"]
            return [r for r in data if r["day"] == "2024-03"]

        wait_until(lambda: bool(months()), "the job to roll up March 2024", 30)
        (march,) = months()
        assert (march["requests"], march["prompt_tokens"], march["completion_tokens"]) == (
            5,
            150,
            15,
        )
        assert march["key_id"] == "" and march["tenant"] == "admin"
        data = srv.admin("GET", "/usage").json()["data"]
        assert not [r for r in data if str(r["day"]).startswith("2024-03-")]
        with sqlite3.connect(srv.data_dir / "sovllm.db", timeout=30) as conn:
            kinds = {k for (k,) in conn.execute("SELECT kind FROM audit_entries")}
        assert {"retention.prune", "retention.usage"} <= kinds
        check = sovllm(srv.env or {}, "audit", "verify")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "(3 pruned past retention)" in check.stdout
        now = srv.admin("POST", "/audit/verify").json()
        assert now["ok"] and now["pruned"] == 3 and now["first_bad_checkpoint"] is None, now
        denied = srv.admin("GET", "/access/denied")
        assert denied.status_code == 200, denied.text
        proof = sovllm(srv.env or {}, "audit", "prove", "old-1")
        assert proof.returncode == 0, proof.stderr
        (entry,) = json.loads(proof.stdout)["entries"]
        assert entry["body"] is None
        assert entry["pruned"]["setting"] == "retention.audit_days"
        assert entry["pruned"]["days"] == 183 and entry["pruned"]["time"]


def test_privacy_purge_applies_every_setting_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_old_entries(data, 1)
    env = {"SOVLLM_DATA_DIR": str(data), "SOVLLM_RETENTION__AUDIT_DAYS": "200"}
    run = sovllm(env, "privacy", "purge")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "purged 0 stored content record(s)",
        "pruned 2 audit entries older than 200 days (their hashes stay)",
        "rolled up 0 usage day row(s) older than 400 days into months",
    ]
    again = sovllm(env, "privacy", "purge")
    assert "pruned 0 audit entries" in again.stdout
    check = sovllm(env, "audit", "verify")
    assert check.returncode == 0 and "(2 pruned past retention)" in check.stdout, check.stdout
    with sqlite3.connect(data / "sovllm.db") as conn:
        (body,) = conn.execute(
            "SELECT body FROM audit_entries WHERE kind = 'retention.prune'"
        ).fetchone()
    assert json.loads(body)["actor"]["cli"]  # who ran it
