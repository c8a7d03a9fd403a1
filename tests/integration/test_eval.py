"""`sovllm eval` against the real server and model: the bundled suite's scores are recorded in
the audit log with the weights' hash and the suite's version, as printed; an evaluation below
its threshold blocks `sovllm models approve` of those weights until --force, which is audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.engines.catalog import resolve_model
from sovllm.engines.weights import hash_weights
from sovllm.evaluation.suites import load_suite
from sovllm.store.db import Database, database_url
from tests.conftest import MODEL_ID, Server

GGUF = resolve_model(MODEL_ID).path


def sovllm(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        env={**os.environ, **(server.env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


def evals(server: Server) -> list[dict[str, object]]:
    db = Database(database_url(None, server.data_dir))
    try:
        with db.read() as s:
            rows = s.execute(
                text("SELECT body FROM audit_entries WHERE kind = 'model.eval' ORDER BY seq")
            )
            return [json.loads(str(b)) for (b,) in rows]
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 46 greedy requests: about a minute alone, far more under load
def test_the_default_suite_is_scored_and_recorded_with_the_weights_hash(server: Server) -> None:
    before = len(evals(server))
    done = sovllm(server, "eval", "--url", server.url, "--key", server.api_key, "--format", "json")
    assert done.returncode in (0, 1), done.stderr  # 1: a check below its threshold
    printed = json.loads(done.stdout)
    recorded = evals(server)[before:]
    assert len(recorded) == 1
    entry = recorded[0]
    suite = load_suite("default")
    assert entry["sha256"] == hash_weights(GGUF).sha256
    assert entry["model"] == MODEL_ID
    assert entry["suite"] == "default" and entry["suite_version"] == suite.version
    assert entry["scores"] == printed["scores"]
    assert set(entry["scores"]) == set(suite.checks)  # type: ignore[arg-type]
    assert all(0 <= v <= 1 for v in entry["scores"].values())  # type: ignore[attr-defined]
    assert entry["passed"] == (done.returncode == 0) == (not entry["below_threshold"])
    assert entry["actor"]["cli"]  # type: ignore[index]
    print("default suite scores:", entry["scores"])  # the lead reports them


def test_an_eval_below_threshold_blocks_approval_until_forced(
    server: Server, tmp_path: Path
) -> None:
    # A one-question suite whose expected word no answer contains: its score is 0.
    suite = tmp_path / "gate.json"
    item = {"prompt": "Say hello.", "expect_any": ["xylophone-quartz-7"]}
    body = {
        "name": "gate",
        "version": "3",
        "checks": {"accuracy": {"threshold": 0.5, "items": [item]}},
    }
    suite.write_text(json.dumps(body))
    done = sovllm(
        server, "eval", "--suite", str(suite), "--url", server.url, "--key", server.api_key
    )
    assert done.returncode == 1, done.stderr
    assert "FAIL accuracy: 0.00 (0/1), threshold 0.50" in done.stdout
    assert evals(server)[-1]["below_threshold"] == ["accuracy"]

    licence = ("--source", "test", "--licence", "apache-2.0")
    refused = sovllm(server, "models", "approve", str(GGUF), *licence)
    assert refused.returncode == 1
    assert "its latest eval (suite gate v3" in refused.stderr
    assert "accuracy 0.00 < 0.50" in refused.stderr and "--force" in refused.stderr
    forced = sovllm(server, "models", "approve", str(GGUF), *licence, "--force")
    assert forced.returncode == 0, forced.stderr
    db = Database(database_url(None, server.data_dir))
    with db.read() as s:
        approve = s.execute(
            text("SELECT body FROM audit_entries WHERE kind = 'model.approve' ORDER BY seq DESC")
        ).first()
    db.dispose()
    assert approve is not None
    forced_by = json.loads(str(approve[0]))["forced_despite_eval"]
    assert forced_by["below_threshold"] == ["accuracy"]


def test_an_eval_with_a_key_whose_answers_are_held_says_so(server: Server) -> None:
    """A tenant that holds every answer for review answers 202 with no choices: one line."""
    key = server.create_key("eval-held")
    before = len(evals(server))
    held = server.admin("PATCH", "/tenants/eval-held", json={"review_policy": "hold"})
    assert held.status_code == 200, held.text
    done = sovllm(server, "eval", "--url", server.url, "--key", key)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "held the answer for human review" in done.stderr
    assert len(evals(server)) == before  # nothing scored, nothing recorded
