"""Scaling a replica group: a KEDA ScaledObject on vLLM's waiting requests (the default), or a
HorizontalPodAutoscaler on the gateway's queue depth (`scaling.mode: hpa`, which needs a
metrics adapter exposing `sovllm_pool_queue_depth` as an external metric).

The plan sized the group for its users: that is the floor. The ceiling is the floor times
`scaling.headroom` unless `scaling.max_replicas` says otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from sovllm.deploy.kube import Context, meta
from sovllm.deploy.yamlout import Document, Noted

COMPONENT = "scaling"
# The adapter's name for the gateway's `sovllm:pool_queue_depth` (colons are not allowed).
EXTERNAL_METRIC = "sovllm_pool_queue_depth"


def bounds(ctx: Context) -> tuple[Noted, Noted]:
    low = ctx.plan.replicas.value
    s = ctx.settings.scaling
    lowest = ctx.noted(ctx.plan.replicas)
    if s.max_replicas is not None:
        high = max(s.max_replicas, low)
        return lowest, Noted(high, "scaling.max_replicas")
    high = max(low, math.ceil(low * s.headroom))
    why = f"{ctx.plan.kind}: {ctx.plan.replicas.source} x scaling.headroom {s.headroom:g}"
    return lowest, Noted(high, why)


def waiting_query(ctx: Context) -> str:
    return f'sum(vllm:num_requests_waiting{{namespace="{ctx.namespace}",service="{ctx.group}"}})'


def scaled_object(ctx: Context) -> Document:
    s = ctx.settings.scaling
    low, high = bounds(ctx)
    trigger = {
        "type": "prometheus",
        "metadata": {
            "serverAddress": s.prometheus_url,
            "query": waiting_query(ctx),
            # Average per replica: one more replica per this many waiting requests.
            "threshold": str(s.waiting_per_replica),
        },
    }
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ctx.group},
        "minReplicaCount": low,
        "maxReplicaCount": high,
        "pollingInterval": 15,
        # A new replica loads its weights for minutes: keep it a while once it is up.
        "cooldownPeriod": 900,
        "triggers": [trigger],
    }
    obj = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(ctx, ctx.group, COMPONENT, ctx.group),
        "spec": spec,
    }
    return Document(obj, (f"KEDA scales {ctx.group} on the requests waiting in vLLM.",))


def autoscaler(ctx: Context) -> Document:
    s = ctx.settings.scaling
    low, high = bounds(ctx)
    metric = {
        "type": "External",
        "external": {
            "metric": {
                "name": EXTERNAL_METRIC,
                "selector": {"matchLabels": {"model_name": ctx.served_model_name}},
            },
            "target": {"type": "AverageValue", "averageValue": str(s.waiting_per_replica)},
        },
    }
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ctx.group},
        "minReplicas": low,
        "maxReplicas": high,
        "metrics": [metric],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 900}},
    }
    obj = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(ctx, ctx.group, COMPONENT, ctx.group),
        "spec": spec,
    }
    header = (f"HPA on the gateway's queue depth ({EXTERNAL_METRIC}, from a metrics adapter).",)
    return Document(obj, header)


def documents(ctx: Context) -> list[Document]:
    if ctx.plan.embedded:
        return []
    return [scaled_object(ctx) if ctx.settings.scaling.mode == "keda" else autoscaler(ctx)]
