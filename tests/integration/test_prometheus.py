"""A real Prometheus (Debian's package) on loopback scrapes a real sovllm with two worker
replicas, evaluates the shipped alerts.yaml, and fires SovllmReplicaDown when a worker is
SIGKILLed. The rule file is the shipped one with only the `for:` shortened, so the test runs in
seconds instead of a minute."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Server, free_port, run_server, wait_until, wait_until_up
from tests.integration.test_pool import ONE_THREAD, pool, replica
from tests.unit.test_alert_rules import RULES

pytestmark = pytest.mark.slow
INTERVAL = "200ms"
"""Scrape and evaluation interval: a killed worker is restarted within seconds, so Prometheus
must look often to see it down."""
DOWN_FOR = "400ms"
"""SovllmReplicaDown's `for:` here (the shipped rule says 1m)."""


def rules_with_short_for(path: Path) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    (down,) = [
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "SovllmReplicaDown"
    ]
    assert down["for"] == "1m"
    down["for"] = DOWN_FOR
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(
        tmp_path_factory.mktemp("prom-pool"), env=ONE_THREAD, args=("--replicas", "2")
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def prometheus(two: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: install Debian's `prometheus` (scripts/test.sh does)"
    tmp = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rules_with_short_for(tmp / "alerts.yaml"))],
        "scrape_configs": [
            {
                "job_name": "sovllm",
                "scrape_timeout": INTERVAL,
                "static_configs": [{"targets": [two.url.removeprefix("http://")]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/-/ready", log, 60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def values(prometheus: str, promql: str, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in query(prometheus, promql)}


FIRED = 'max_over_time(ALERTS{alertname="SovllmReplicaDown",alertstate="firing"}[10m])'
"""Firing at any time in the last ten minutes: the supervisor restarts the worker within
seconds, so the alert may already be resolved when the test looks."""


def test_prometheus_fires_replica_down_when_a_worker_is_killed(
    two: Server, prometheus: str
) -> None:
    wait_until(
        lambda: (
            values(prometheus, "sovllm:replica_healthy", "replica")
            == {"worker-0": 1.0, "worker-1": 1.0}
        ),
        "Prometheus to scrape two healthy replicas",
    )
    # The new gauges reach Prometheus too; a refused key is counted by its code.
    r = httpx.get(f"{two.base_url}/models", headers={"Authorization": "Bearer sk-sovllm-wrong"})
    assert r.status_code == 401
    wait_until(
        lambda: query(prometheus, 'sovllm:request_errors_total{status="401"}'),
        "the 401 in sovllm:request_errors_total",
    )
    assert values(prometheus, "sovllm:stops_active", "scope") == {
        "all": 0.0,
        "model": 0.0,
        "tenant": 0.0,
    }
    assert values(prometheus, "sovllm:audit_entries", "job")["sovllm"] > 0
    assert values(prometheus, "sovllm:data_volume_free_bytes", "job")["sovllm"] > 0
    assert query(prometheus, FIRED) == []  # nothing fired while both were up

    victim = replica(two, "worker-1")
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: query(prometheus, FIRED) != [], "SovllmReplicaDown to fire", timeout=60)
    (fired,) = query(prometheus, FIRED)
    assert fired["metric"]["replica"] == "worker-1"
    assert fired["metric"]["severity"] == "critical"
    # worker-0 stayed up all along: the alert names only the killed one.
    assert query(prometheus, FIRED.replace('firing"}', 'firing",replica="worker-0"}')) == []
    # The supervisor brings it back, and the alert resolves.
    wait_until(lambda: replica(two, "worker-1")["state"] == "healthy", "worker-1 to rejoin")
    wait_until(
        lambda: (
            not [
                a
                for a in httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"][
                    "alerts"
                ]
                if a["labels"]["alertname"] == "SovllmReplicaDown"
            ]
        ),
        "SovllmReplicaDown to resolve",
    )
    assert {r["name"] for r in pool(two)["replicas"]} == {"worker-0", "worker-1"}
