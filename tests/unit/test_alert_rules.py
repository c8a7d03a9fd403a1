"""The alert rules, checked and unit-tested with the real promtool (Debian's `prometheus`
package; scripts/test.sh installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
CANONICAL = ROOT / "src" / "sovllm" / "deploy" / "alerts.yaml"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install Debian's `prometheus` (scripts/test.sh does)"
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=120)


def alert_names(rules: dict[str, Any]) -> list[str]:
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_the_shipped_copy_is_the_canonical_one() -> None:
    assert RULES.read_bytes() == CANONICAL.read_bytes(), (
        "deploy/prometheus/alerts.yaml differs from src/sovllm/deploy/alerts.yaml: copy it"
    )


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 11 rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_the_issue_asks_for_is_there() -> None:
    names = set(alert_names(yaml.safe_load(RULES.read_text())))
    assert names == {
        "SovllmTTFTOverSLO",
        "SovllmQueueGrowing",
        "SovllmReplicaDown",
        "SovllmAuditCheckpointLate",
        "SovllmAuditVerifyFailed",
        "SovllmDataVolumeNearlyFull",
        "SovllmStopEngaged",
        "SovllmIncidentReportDue",
        "SovllmClockUnsynchronized",
    }


@pytest.mark.parametrize("name", alert_names(yaml.safe_load(RULES.read_text())))
def test_each_alert_has_a_unit_test_that_fails_without_it(name: str, tmp_path: Path) -> None:
    """Dropping one alert makes promtool's tests fail on that alert: none is untested."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != name]
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(TESTS, tmp_path / "alerts_test.yaml")
    done = promtool("test", "rules", tmp_path / "alerts_test.yaml")
    assert done.returncode != 0
    assert f"alertname: {name}," in done.stdout + done.stderr


def test_the_slo_is_a_parameter(tmp_path: Path) -> None:
    """Raising the TTFT objective to 10 s silences the alert the 2 s default raises."""
    text = RULES.read_text()
    assert text.count("expr: vector(2)\n") == 1
    (tmp_path / "alerts.yaml").write_text(text.replace("expr: vector(2)\n", "expr: vector(10)\n"))
    shutil.copy(TESTS, tmp_path / "alerts_test.yaml")
    done = promtool("test", "rules", tmp_path / "alerts_test.yaml")
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "alertname: SovllmTTFTOverSLO," in out
    assert "got:[]" in out
