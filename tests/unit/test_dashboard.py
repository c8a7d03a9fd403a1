"""deploy/grafana/sovllm.json: valid Grafana JSON whose queries name only metrics sovllm
exports (read from a real scrape of its collectors), parse as PromQL (promtool) and read the
data source from the `DS_PROMETHEUS` variable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import yaml
from prometheus_client.parser import text_string_to_metric_families

from sovllm.engines.base import EngineStats, GenerationOutput, Timings
from sovllm.governance.oversight import Oversight
from sovllm.observability.audit_metrics import AuditCollector, AuditHealth
from sovllm.observability.energy.meter import EnergyMeter
from sovllm.observability.energy.metrics import EnergyCollector
from sovllm.observability.key_metrics import KeyAgeCollector
from sovllm.observability.metrics import Metrics
from sovllm.observability.pool_metrics import PoolCollector
from sovllm.observability.service_metrics import DataVolumeCollector, StopsCollector
from sovllm.pool.router import Pool
from sovllm.store.db import Database
from tests.unit.test_alert_rules import promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sovllm.json"
METRIC = re.compile(r"\b(?:sovllm|vllm):[a-zA-Z0-9_:]+")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$model": ".*"}


class _Audit(AuditCollector):
    def health(self) -> AuditHealth:
        return AuditHealth(10, 8, 1.0, True, 2.0)


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name of a scrape of the collectors serve/app.py registers."""
    stats = EngineStats(1, 2, 4, 8, 10, 5)
    metrics = Metrics(["m"], lambda _: stats)
    metrics.observe_finished("m", GenerationOutput("", (), 3, 5, "stop", Timings(0, 0, 1, 2)))
    metrics.observe_error(429, "rate_limit_exceeded")
    replica = SimpleNamespace(
        name="w0", kind="worker", model_id="m", healthy=True, outstanding=1, stats=stats
    )
    pool = SimpleNamespace(replicas=[replica], model_ids=["m"], stats=lambda _: stats)
    registry = metrics.registry
    registry.register(PoolCollector(cast(Pool, pool)))
    registry.register(KeyAgeCollector({}))
    registry.register(StopsCollector(Oversight(cast(Database, None))))
    registry.register(_Audit(cast(Database, None)))
    registry.register(DataVolumeCollector(tmp_path))
    energy = EnergyMeter(None, None)
    energy.totals[("t", "m", "estimated")] += 1.0  # what `finish` adds for an ended request
    registry.register(EnergyCollector(energy))
    text = metrics.render().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [p for p in found if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def unknown_names(exprs: list[str], known: set[str]) -> set[str]:
    return {name for e in exprs for name in METRIC.findall(e)} - known


def test_every_query_names_only_exported_metrics(tmp_path: Path) -> None:
    known = exported_names(tmp_path)
    assert unknown_names(expressions(), known) == set()
    assert all(METRIC.search(e) for e in expressions())  # every query reads a metric
    # The check can fail: a misspelt name is caught.
    assert unknown_names(["rate(sovllm:request_error_total[5m])"], known) == {
        "sovllm:request_error_total"
    }


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    rules = []
    for n, expr in enumerate(expressions()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_data_source_is_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("DS_PROMETHEUS", "prometheus")
    for panel in panels():
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])


def test_the_panels_the_issue_asks_for() -> None:
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels()}
    wanted = {
        "Time to first token": "sovllm:time_to_first_token_seconds_bucket",
        "Time per output token": "sovllm:time_per_output_token_seconds_bucket",
        "Inter-token latency": "sovllm:inter_token_latency_seconds_bucket",
        "Requests running per replica": "sovllm:replica_num_requests_running",
        "Requests waiting per replica": "sovllm:replica_num_requests_waiting",
        "Prefix-cache hit rate": "sovllm:prefix_cache_hits_total",
        "Errors by code": "sovllm:request_errors_total",
        "Quota refusals": "sovllm:request_errors_total",
        "Stops": "sovllm:stops_active",
        "Energy per tenant": "sovllm:energy_joules_total",
        "Audit log size": "sovllm:audit_entries",
        "Age of the last checkpoint": "sovllm:audit_unsigned_age_seconds",
    }
    for title, metric in wanted.items():
        assert metric in by_title.get(title, ""), title
    for title in ("Time to first token", "Time per output token", "Inter-token latency"):
        assert "histogram_quantile(0.5," in by_title[title]
        assert "histogram_quantile(0.95," in by_title[title]
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
