"""`sovllm:key_age_seconds`: each key file's age, back to zero after a rotation."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sovllm.config import load_settings
from sovllm.governance.audit import open_audit
from sovllm.governance.privacy.content import open_vault
from sovllm.governance.privacy.masterkey import rotate
from sovllm.observability.key_metrics import KeyAgeCollector, key_files
from sovllm.store.db import Database

DAY = 86400.0


def ages(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "sovllm:key_age_seconds"
    ]
    return {s.labels["key"]: s.value for s in family.samples}


def test_key_ages_and_a_rotation_resets_one(db: Database, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data")
    files = key_files(settings)
    registry = CollectorRegistry()
    registry.register(KeyAgeCollector(files))
    assert ages(registry) == {}  # no key made yet: nothing to report
    open_audit(settings, db)
    open_vault(settings, db)
    now = time.time()
    for n, name in enumerate(("signing", "master", "pseudonym"), start=1):
        os.utime(files[name], (now - n * 10 * DAY, now - n * 10 * DAY))
    found = ages(registry)
    for n, name in enumerate(("signing", "master", "pseudonym"), start=1):
        assert abs(found[name] - n * 10 * DAY) < 60, (name, found)
    rotate(db, files["master"])
    found = ages(registry)
    assert found["master"] < 60 and found["pseudonym"] > 29 * DAY
