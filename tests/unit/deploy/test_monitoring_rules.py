"""The PrometheusRule `sovllm deploy` writes: the shipped alerts.yaml's groups with the plan's
TTFT objective, plus the cluster's own alerts, and promtool accepts it."""

from __future__ import annotations

from pathlib import Path

import yaml

from sovllm.deploy.monitoring import SLO_RECORD, shipped_rules
from tests.unit.deploy.test_generate import deploy, read_dir
from tests.unit.test_alert_rules import RULES, promtool


def test_the_rule_holds_the_shipped_alerts_with_the_plans_slo(
    article_plan: Path, tmp_path: Path
) -> None:
    assert deploy(article_plan, tmp_path / "out").exit_code == 0
    objs = [o for docs in read_dir(tmp_path / "out").values() for o in docs if o]
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    groups = rule["spec"]["groups"]
    shipped = yaml.safe_load(RULES.read_text())["groups"]
    for group in shipped:
        for r in group["rules"]:
            if r.get("record") == SLO_RECORD:
                r["expr"] = "vector(0.5)"  # the article plan's ttft_p95_s
    assert groups[: len(shipped)] == shipped
    assert shipped_rules() == yaml.safe_load(RULES.read_text())
    assert {r["alert"] for r in groups[-1]["rules"]} == {
        "SovllmGatewayDown",
        "SovllmQueueWaitingHigh",
    }
    (tmp_path / "rule.yaml").write_text(yaml.safe_dump({"groups": groups}))
    done = promtool("check", "rules", tmp_path / "rule.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
