"""Every request and admin action lands in the audit log, durably and verifiably."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from sovllm.engines.catalog import resolve_tokenizer
from tests.conftest import MODEL_ID, Server

SECRET_PROMPT = "My patient Mario Rossi (RSSMRA85T10A562S, mario.rossi@example.com) has diabetes"


def sovllm(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(server.env or {})},
    )  # fmt: skip


def entries(server: Server, request_id: str) -> list[dict[str, object]]:
    with sqlite3.connect(server.data_dir / "sovllm.db") as conn:
        rows = conn.execute(
            "SELECT body FROM audit_entries WHERE request_id = ? ORDER BY seq", (request_id,)
        ).fetchall()
    return [json.loads(b) for (b,) in rows]


def test_a_request_gets_a_begin_and_an_end_entry_without_its_content(server: Server) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    out = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": SECRET_PROMPT}], max_tokens=5,
        user="mario.rossi@example.com",
    )  # fmt: skip
    begin, end = entries(server, out.id)
    assert begin["kind"] == "request.begin" and end["kind"] == "request.end"
    model = begin["model"]
    assert isinstance(model, dict)
    assert model["id"] == MODEL_ID and model["weights_sha256"] == out.system_fingerprint
    assert len(model["engine_config_sha256"]) == 64
    # The default model is served derived from the shipped file: both hashes are on record.
    shipped = resolve_tokenizer(MODEL_ID).read_bytes()
    assert model["derived_from_sha256"] == hashlib.sha256(shipped).hexdigest()
    assert model["derived_from_sha256"] != model["weights_sha256"]
    principal = begin["principal"]
    assert isinstance(principal, dict) and principal["role"] == "admin"
    assert principal["user"] and "mario" not in str(principal["user"])
    assert end["outcome"] == "completed"
    # Personal data in the prompt is counted by kind, never stored.
    assert begin["policy"] == {
        "quota": "admitted",
        "pii": {"codice_fiscale": 1, "email": 1},
        "masked_before_model": False,
    }
    assert end["tokens"] == {"prompt": out.usage.prompt_tokens, "completion": 5}  # type: ignore[union-attr]
    raw = (server.data_dir / "sovllm.db").read_bytes()
    assert SECRET_PROMPT.encode() not in raw and b"mario.rossi" not in raw
    assert b"RSSMRA85T10A562S" not in raw


def test_the_begin_entry_is_durable_before_the_first_token(server: Server) -> None:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 50, "stream": True}  # fmt: skip
    url = f"{server.base_url}/chat/completions"
    with httpx.stream("POST", url, json=body, headers=server.auth, timeout=60) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines).removeprefix("data: "))
        # Read from another connection while the stream is still open.
        kinds = [e["kind"] for e in entries(server, first["id"])]
        assert kinds[0] == "request.begin"
        for _ in lines:
            pass


def test_admin_actions_are_recorded_with_their_actor(server: Server) -> None:
    server.create_key("audited-tenant")
    with sqlite3.connect(server.data_dir / "sovllm.db") as conn:
        bodies = [json.loads(b) for (b,) in conn.execute(
            "SELECT body FROM audit_entries WHERE kind = 'admin' ORDER BY seq")]  # fmt: skip
    mine = [b for b in bodies
            if b["action"] == "key.create" and b["target"].get("tenant") == "audited-tenant"]  # fmt: skip
    assert len(mine) == 1, bodies
    assert set(mine[0]["actor"]) == {"tenant", "key_id", "role"}
    assert mine[0]["actor"]["role"] == "admin" and mine[0]["actor"]["tenant"] == "admin"
    # Every admin entry names its actor: an admin key over the API, or a user at the CLI.
    for b in bodies:
        actor = b["actor"]
        assert actor.get("role") == "admin" or set(actor) == {"cli", "host"}, b
    assert server.api_key not in json.dumps(bodies)


def test_verify_export_and_tamper_detection(server: Server, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    client.completions.create(model=MODEL_ID, prompt="Audit me", max_tokens=2)
    witness = sovllm(server, "audit", "checkpoint", "--out", str(tmp_path / "dpo"))
    assert witness.returncode == 0, witness.stderr
    note = Path(witness.stdout.strip())
    ok = sovllm(server, "audit", "verify", "--against", str(note))
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stdout + ok.stderr
    export = sovllm(server, "audit", "export")
    # Keys appear only as their id and 4-character visible prefix, never whole.
    assert server.api_key not in export.stdout
    assert not re.search(r"sk-sovllm-[A-Za-z0-9]{10,}", export.stdout)
    log = tmp_path / "log.jsonl"
    log.write_text(export.stdout)
    offline = sovllm(server, "audit", "verify", "--offline", str(log), "--checkpoint", str(note))
    assert offline.returncode == 0, offline.stdout + offline.stderr
    lines = export.stdout.splitlines()
    log.write_text("\n".join([*lines[:2], "garbage", *lines[3:]]))
    bad = sovllm(server, "audit", "verify", "--offline", str(log))
    assert bad.returncode == 1 and "line 3" in bad.stderr
    # Rewrite one entry in the live database, as an attacker with file access would.
    db = server.data_dir / "sovllm.db"
    with sqlite3.connect(db) as conn:
        (original,) = conn.execute("SELECT body FROM audit_entries WHERE seq = 1").fetchone()
        conn.execute("UPDATE audit_entries SET body = ? WHERE seq = 1",
                     (original.replace("request", "REQUEST"),))  # fmt: skip
    try:
        tampered = sovllm(server, "audit", "verify", "--against", str(note))
        assert tampered.returncode == 1
        assert "first bad entry: 1" in tampered.stdout
    finally:  # the server is shared with other tests: put the entry back
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE audit_entries SET body = ? WHERE seq = 1", (original,))
    assert sovllm(server, "audit", "verify").returncode == 0
    # The columns beside the body, which prove and search read, are checked against it too.
    with sqlite3.connect(db) as conn:
        (rid,) = conn.execute("SELECT request_id FROM audit_entries WHERE seq = 1").fetchone()
        conn.execute("UPDATE audit_entries SET request_id = 'someone-else' WHERE seq = 1")
    try:
        moved = sovllm(server, "audit", "verify")
        assert moved.returncode == 1
        assert "first bad entry: 1" in moved.stdout and "request_id" in moved.stdout
        export = sovllm(server, "audit", "export")
        log.write_text(export.stdout)
        offline = sovllm(server, "audit", "verify", "--offline", str(log))
        assert offline.returncode == 1 and "first bad entry: 1" in offline.stdout
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE audit_entries SET request_id = ? WHERE seq = 1", (rid,))
    assert sovllm(server, "audit", "verify").returncode == 0


async def test_sigkill_under_load_leaves_a_verifiable_log(tmp_path: Path) -> None:
    """Every request that got a token has its begin entry, and the log verifies after restart."""
    import asyncio
    import signal

    from tests.conftest import run_server

    answered: set[str] = set()
    with run_server(tmp_path) as srv:
        key = srv.create_key("load")
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Tell a story."}],
                "max_tokens": 200, "ignore_eos": True, "stream": True}  # fmt: skip
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits,
                                     headers={"Authorization": f"Bearer {key}"}) as http:  # fmt: skip

            async def one() -> None:
                try:
                    async with http.stream(
                        "POST", f"{srv.base_url}/chat/completions", json=body
                    ) as r:
                        async for line in r.aiter_lines():
                            if line.startswith("data: {"):
                                answered.add(json.loads(line[6:])["id"])
                except httpx.HTTPError:
                    pass  # the server died under us: expected

            tasks = [asyncio.create_task(one()) for _ in range(40)]
            deadline = asyncio.get_running_loop().time() + 120
            while len(answered) < 20:  # polls the clients' own state, with a deadline
                assert asyncio.get_running_loop().time() < deadline, len(answered)
                await asyncio.sleep(0.05)
            srv.process.send_signal(signal.SIGKILL)
            srv.process.wait()
            await asyncio.gather(*tasks)
        env = srv.env
    assert len(answered) >= 20
    with run_server(tmp_path, env) as again:
        check = sovllm(again, "audit", "verify")
        assert check.returncode == 0, check.stdout + check.stderr
        with sqlite3.connect(again.data_dir / "sovllm.db") as conn:
            begun = {r for (r,) in conn.execute(
                "SELECT request_id FROM audit_entries WHERE kind = 'request.begin'")}  # fmt: skip
    assert answered <= begun


def test_a_quota_refusal_is_recorded(server: Server) -> None:
    key = server.create_key("one-per-minute", rpm=1)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    url = f"{server.base_url}/chat/completions"
    assert httpx.post(url, json=body, headers=headers, timeout=60).status_code == 200
    refused = httpx.post(url, json=body, headers=headers, timeout=60)
    assert refused.status_code == 429
    with sqlite3.connect(server.data_dir / "sovllm.db") as conn:
        rows = [json.loads(b) for (b,) in conn.execute(
            "SELECT body FROM audit_entries WHERE kind = 'request.rejected'")]  # fmt: skip
    mine = [r for r in rows if r["principal"]["tenant"] == "one-per-minute"]
    assert len(mine) == 1 and mine[0]["policy"] == {"quota": "rate_limit_exceeded"}


def test_auditors_search_verify_and_fetch_the_checkpoint_over_http(server: Server) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    out = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    auditor = {"Authorization": f"Bearer {server.create_key('audit-office', role='auditor')}"}
    base = f"{server.url}/admin/v1/audit"
    found = httpx.get(f"{base}/entries", params={"request_id": out.id}, headers=auditor).json()
    assert [e["entry"]["kind"] for e in found["data"]] == ["request.end", "request.begin"]
    by_tenant = httpx.get(f"{base}/entries", params={"tenant": "admin", "limit": 5},
                          headers=auditor).json()["data"]  # fmt: skip
    assert by_tenant and all(
        (e["entry"].get("principal") or e["entry"].get("actor"))["tenant"] == "admin"
        for e in by_tenant
    )
    verdict = httpx.post(f"{base}/verify", headers=auditor, timeout=60).json()
    assert verdict["ok"] is True and verdict["size"] >= 2
    # The verification itself is recorded, with its actor, and is what "last" reads.
    last = httpx.get(f"{base}/verify/last", headers=auditor).json()
    assert (last["ok"], last["size"], last["actor"]["tenant"]) == (True, verdict["size"],
                                                                  "audit-office")  # fmt: skip
    recorded = httpx.get(f"{base}/entries", params={"limit": 3}, headers=auditor).json()["data"]
    assert "audit.verify" in [e["entry"]["kind"] for e in recorded]
    cp = httpx.get(f"{base}/checkpoint", headers=auditor).json()
    assert cp["note"].split("\n")[0] == "sovllm" and cp["verifier_key"].startswith("sovllm+")
    user = {"Authorization": f"Bearer {server.create_key('not-an-auditor')}"}
    assert httpx.get(f"{base}/entries", headers=user).status_code == 403
