"""Retention rules at start-up, and the GDPR Art. 30 record built from the configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sovllm.config import ConfigError, load_settings
from sovllm.governance.records import record_of_processing, to_markdown


def test_audit_retention_below_six_months_is_refused_citing_the_ai_act(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOVLLM_RETENTION__AUDIT_DAYS", "90")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "retention.audit_days" in message and "Art. 19" in message and "26(6)" in message


def test_the_record_follows_the_configuration(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path)
    settings.retention.content_days = 7
    record = record_of_processing(settings)
    categories = {c["category"]: c for c in record["data_categories"]}
    assert categories["prompt and answer content"]["retention_days"] == 7
    assert categories["audit metadata"]["minimum_days"] == 183
    assert record["recipients"] == []
    assert record["system"]["storage"] == "sqlite"
    md = to_markdown(record)
    assert md.startswith("# Record of processing activities (GDPR Art. 30)")
    assert "| prompt and answer content |" in md and "7 days" in md


def test_the_cli_prints_markdown_or_json(tmp_path: Path) -> None:
    env = {**os.environ, "SOVLLM_DATA_DIR": str(tmp_path),
           "SOVLLM_DATABASE_URL": "postgresql+psycopg://db.internal/sovllm"}  # fmt: skip
    run = [sys.executable, "-m", "sovllm", "compliance", "records"]
    md = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert md.returncode == 0 and "## Security measures" in md.stdout
    out = subprocess.run(
        [*run, "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert json.loads(out.stdout)["system"]["storage"] == "postgresql"
    bad = subprocess.run(
        [*run, "--format", "pdf"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad.returncode == 2 and "--format" in bad.stderr
