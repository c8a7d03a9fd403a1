"""Retention rules at start-up, and the GDPR Art. 30 record built from the configuration."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sovllm.config import ConfigError, load_settings
from sovllm.governance import tenants
from sovllm.governance.audit import open_audit
from sovllm.governance.privacy.content import open_vault
from sovllm.governance.records import record_of_processing, to_markdown
from sovllm.store.db import Database
from tests.conftest import fresh_database_url


def test_audit_retention_below_six_months_is_refused_citing_the_ai_act(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOVLLM_RETENTION__AUDIT_DAYS", "90")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "retention.audit_days" in message and "Art. 19" in message and "26(6)" in message


def test_the_record_follows_the_configuration_and_the_tenants(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOVLLM_RETENTION__CONTENT_DAYS", "7")
    monkeypatch.setenv("SOVLLM_RETENTION__AUDIT_DAYS", "400")
    monkeypatch.setenv("SOVLLM_RETENTION__USAGE_DAYS", "90")
    # A signing key the deployment provides (sovllm never creates one where it is told to read).
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "log.key").write_text(base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("SOVLLM_AUDIT__KEY_FILE", str(tmp_path / "keys" / "log.key"))
    settings = load_settings(None, data_dir=tmp_path / "data")
    tenants.create_tenant(db, "radiology", content_policy="redacted", mask_prompts=True)
    tenants.create_tenant(db, "legal", content_policy="full")
    tenants.create_tenant(db, "hr")
    record = record_of_processing(settings, db)
    categories = {c["category"]: c for c in record["data_categories"]}
    content = categories["prompt and answer content"]
    # Which tenants keep content, and how, as the tenants table says.
    assert content["tenants_keeping_content"] == [
        {"tenant": "legal", "policy": "full"},
        {"tenant": "radiology", "policy": "redacted"},
    ]
    assert "radiology (personal data masked)" in content["content"]
    assert "legal (as sent)" in content["content"] and "hr" not in content["content"]
    measures = record["security_measures"]
    assert "personal data masked before prompts reach the model for tenants: radiology" in measures
    # The retention each setting actually gets.
    assert content["retention"].startswith("deleted after 7 days")
    audit_meta = categories["audit metadata"]
    assert audit_meta["retention"].startswith("bodies pruned after 400 days;")
    assert "hash" in audit_meta["retention"] and "never pruned" in audit_meta["retention"]
    # The personal data that access logging adds is declared.
    assert "source IP address" in audit_meta["content"] and "access.read" in audit_meta["content"]
    assert categories["usage counters"]["retention"] == (
        "rolled up per tenant and month after 90 days, then deleted"
    )
    # The minimum the record states is the one the settings enforce.
    minimum = categories["audit metadata"]["minimum_days"]
    monkeypatch.setenv("SOVLLM_RETENTION__AUDIT_DAYS", str(minimum))
    load_settings(None, data_dir=tmp_path)
    monkeypatch.setenv("SOVLLM_RETENTION__AUDIT_DAYS", str(minimum - 1))
    with pytest.raises(ConfigError):
        load_settings(None, data_dir=tmp_path)
    # The key files named are the ones the service opens.
    open_vault(settings, db)
    open_audit(settings, db).close()
    master = settings.data_dir / "audit" / "master.key"
    assert master.exists() and record["keys"]["content_master_key"].startswith(f"file {master} ")
    signing = tmp_path / "keys" / "log.key"
    assert signing.exists() and record["keys"]["audit_signing_key"].startswith(f"file {signing} ")
    assert record["recipients"] == []
    assert record["system"]["storage"] == db.backend
    md = to_markdown(record)
    assert md.startswith("# Record of processing activities (GDPR Art. 30)")
    assert "| prompt and answer content |" in md and "deleted after 7 days" in md


def test_the_record_says_what_is_not_set_or_not_kept(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path)
    tenants.create_tenant(db, "hr")
    record = record_of_processing(settings, db)
    for field, setting in (
        ("controller", "compliance.controller"),
        ("data_protection_officer", "compliance.dpo_contact"),
    ):
        assert record[field].startswith("NOT SET") and setting in record[field]
    content = next(c for c in record["data_categories"] if "content" in c["category"])
    assert content["tenants_keeping_content"] == [] and content["retention"] == "not stored"
    assert content["content"].startswith("not stored")
    measures = record["security_measures"]
    assert "data minimisation: no tenant keeps prompt or answer content" in measures
    # What answers without a key is what the server lets through (metrics open by default).
    assert any("/metrics (metrics_require_key is off)" in m for m in measures)
    assert any(m.startswith("roles: user (") and "reviewer (" in m for m in measures)
    settings.metrics_require_key = True
    measures = record_of_processing(settings, db)["security_measures"]
    assert not any("/metrics" in m for m in measures)
    md = to_markdown(record)
    assert "**Controller:** NOT SET" in md and "**Data protection officer:** NOT SET" in md
    settings.compliance.controller = "Ospedale San Carlo, privacy@osc.example"
    settings.compliance.dpo_contact = "dpo@osc.example"
    record = record_of_processing(settings, db)
    assert record["controller"] == "Ospedale San Carlo, privacy@osc.example"
    assert record["data_protection_officer"] == "dpo@osc.example"


def test_the_cli_prints_markdown_or_json(tmp_path: Path, postgres_url: str) -> None:
    env = {
        **os.environ,
        "SOVLLM_DATA_DIR": str(tmp_path),
        "SOVLLM_COMPLIANCE__CONTROLLER": "Ospedale San Carlo",
    }
    run = [sys.executable, "-m", "sovllm", "compliance", "records"]
    md = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert md.returncode == 0, md.stderr
    assert "## Security measures" in md.stdout
    assert "**Controller:** Ospedale San Carlo" in md.stdout
    assert "**Data protection officer:** NOT SET" in md.stdout
    env["SOVLLM_DATABASE_URL"] = fresh_database_url("postgresql", tmp_path, postgres_url)
    out = subprocess.run(
        [*run, "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["system"]["storage"] == "postgresql"
    bad = subprocess.run(
        [*run, "--format", "pdf"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad.returncode == 2 and "--format" in bad.stderr
