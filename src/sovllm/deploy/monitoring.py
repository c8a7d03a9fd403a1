"""What Prometheus scrapes (ServiceMonitors for the gateway and the vLLM pods) and the alerts
it raises (a PrometheusRule). Metric names are the gateway's (observability/metrics.py,
pool_metrics.py) and vLLM's own."""

from __future__ import annotations

from typing import Any

from sovllm.deploy import gateway, scaling, vllm
from sovllm.deploy.kube import Context, labels, meta
from sovllm.deploy.yamlout import Document, Noted

COMPONENT = "monitoring"


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


def rules(ctx: Context) -> Document:
    slo = ctx.plan.ttft_p95_slo_s
    ttft = (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(sovllm:time_to_first_token_seconds_bucket[5m])))"
    )
    alerts = [
        _alert(
            "SovllmReplicaDown",
            "sovllm:replica_healthy == 0",
            "5m",
            "critical",
            "Replica {{ $labels.replica }} takes no traffic (its breaker is open).",
        ),
        _alert(
            "SovllmTTFTOverSLO",
            f"{ttft} > {slo.value}",
            "10m",
            "warning",
            Noted(f"TTFT p95 over {slo.value} s for 10 minutes.", f"{ctx.plan.kind}: {slo.source}"),
        ),
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
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta(ctx, "sovllm", COMPONENT),
        "spec": {"groups": [{"name": "sovllm", "rules": alerts}]},
    }
    header = (
        "A small honest set. No audit-write alert: the gateway exports no metric for audit",
        "writes yet.",
    )
    return Document(obj, header)


def documents(ctx: Context) -> list[Document]:
    docs = [service_monitor(ctx, gateway.NAME, gateway.COMPONENT, None)]
    if not ctx.plan.embedded:
        docs.append(service_monitor(ctx, ctx.group, vllm.COMPONENT, ctx.group))
    docs.append(rules(ctx))
    return docs
