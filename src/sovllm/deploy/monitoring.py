"""What Prometheus scrapes (ServiceMonitors for the gateway and the vLLM pods) and the alerts
it raises (a PrometheusRule: the shipped alerts.yaml and the cluster's own). Metric names are
the gateway's (observability/) and vLLM's own."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from sovllm.deploy import gateway, scaling, vllm
from sovllm.deploy.kube import Context, labels, meta
from sovllm.deploy.yamlout import Document, Noted

COMPONENT = "monitoring"
ALERTS = "alerts.yaml"
SLO_RECORD = "sovllm:ttft_p95_slo_seconds"


def service_monitor(ctx: Context, name: str, component: str, group: str | None) -> Document:
    # Not the balanced vLLM Service: its endpoints are the headless one's pods, scraped twice.
    not_balanced = [{"key": vllm.ROLE, "operator": "DoesNotExist"}]
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(ctx, name, COMPONENT),
        "spec": {
            "selector": {"matchLabels": labels(component, group), "matchExpressions": not_balanced},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }
    return Document(obj)


def _alert(name: str, expr: str, duration: str, severity: str, summary: Any) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


def shipped_rules() -> dict[str, Any]:
    """The alert rules of deploy/prometheus/alerts.yaml, as the package ships them
    (src/sovllm/deploy/alerts.yaml: the one source; tests keep the two files identical)."""
    text = resources.files("sovllm.deploy").joinpath(ALERTS).read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _with_plan_slo(ctx: Context, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shipped groups with the TTFT objective set to the plan's."""
    slo = ctx.plan.ttft_p95_slo_s
    for group in groups:
        for rule in group["rules"]:
            if rule.get("record") == SLO_RECORD:
                rule["expr"] = Noted(f"vector({slo.value})", f"{ctx.plan.kind}: {slo.source}")
    return groups


def rules(ctx: Context) -> Document:
    """The shipped alerts (docs/observability.md), and the ones only a cluster has: a gateway
    pod that does not answer, and vLLM's queue at the scaling ceiling."""
    alerts = [
        _alert(
            "SovllmGatewayDown",
            f'up{{namespace="{ctx.namespace}",service="{gateway.NAME}"}} == 0',
            "5m",
            "critical",
            "A gateway pod does not answer /metrics.",
        ),
    ]
    if not ctx.plan.embedded:
        _, high = scaling.bounds(ctx)
        limit = ctx.settings.scaling.waiting_per_replica * high.value
        alerts.append(
            _alert(
                "SovllmQueueWaitingHigh",
                f"{scaling.waiting_query(ctx)} > {limit}",
                "10m",
                "warning",
                Noted(
                    f"More than {limit} requests wait in vLLM: scaling is at its ceiling.",
                    "scaling.waiting_per_replica x the maximum replicas",
                ),
            )
        )
    groups = _with_plan_slo(ctx, shipped_rules()["groups"])
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta(ctx, "sovllm", COMPONENT),
        "spec": {"groups": [*groups, {"name": "sovllm-cluster", "rules": alerts}]},
    }
    header = ("The groups of deploy/prometheus/alerts.yaml, then the cluster's own alerts.",)
    return Document(obj, header)


def documents(ctx: Context) -> list[Document]:
    docs = [service_monitor(ctx, gateway.NAME, gateway.COMPONENT, None)]
    if not ctx.plan.embedded:
        docs.append(service_monitor(ctx, ctx.group, vllm.COMPONENT, ctx.group))
    docs.append(rules(ctx))
    return docs
