"""The gateway: its settings file (a ConfigMap, no secrets in it), a Deployment of at least two
pods, their PodDisruptionBudget and Service. The keys are Secrets (secrets.py) mounted
read-only; the database URL comes from the database's Secret.
"""

from __future__ import annotations

from typing import Any

import yaml

from sovllm.deploy import postgres, secrets, weights
from sovllm.deploy.kube import (
    Context,
    container_security,
    labels,
    meta,
    pod_security,
    resources,
    tmp_volume,
)
from sovllm.deploy.vllm import PORT as VLLM_PORT
from sovllm.deploy.yamlout import Document, Noted

COMPONENT = "gateway"
NAME = "sovllm-gateway"
CONFIG_NAME = "sovllm-gateway-config"
CONFIG_DIR = "/etc/sovllm/config"
SECRETS_DIR = "/etc/sovllm/secrets"
# A folder inside the emptyDir (whose mount point is 0777): sovllm creates it 0700.
DATA_DIR = "/var/lib/sovllm/data"


def vllm_discovery(ctx: Context) -> dict[str, Any]:
    """The headless Service's name: one A record per ready pod, followed by the pool."""
    name = f"{ctx.group}.{ctx.namespace}.svc.cluster.local"
    return {"kind": "dns", "name": name, "port": VLLM_PORT, "interval_s": 5}


def settings_file(ctx: Context) -> dict[str, Any]:
    """The gateway's sovllm.yaml: what `sovllm serve --config` reads. Key files are paths to
    the mounted Secret; the database URL comes from the environment."""
    doc: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": ctx.settings.gateway.port,
        "data_dir": DATA_DIR,
        "served_model_name": ctx.served_model_name,
        "audit": {"key_file": f"{SECRETS_DIR}/{secrets.AUDIT_KEY}"},
        "privacy": {
            "master_key_file": f"{SECRETS_DIR}/{secrets.MASTER_KEY}",
            "pseudonym_key_file": f"{SECRETS_DIR}/{secrets.PSEUDONYM_KEY}",
        },
    }
    if ctx.plan.embedded:
        doc["model"] = weights.model_path(ctx)
        return doc
    doc["model"] = ctx.plan.model
    doc["replicas"] = [
        {
            "kind": "vllm",
            "name": ctx.group,
            # Each ready pod is a replica of its own (routing, prefix affinity, draining), not
            # one balanced Service address over all of them.
            "discovery": vllm_discovery(ctx),
            "model": ctx.served_model_name,
        }
    ]
    return doc


def configmap(ctx: Context) -> Document:
    text = yaml.safe_dump(settings_file(ctx), sort_keys=False)
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(ctx, CONFIG_NAME, COMPONENT),
        "data": {"sovllm.yaml": text},
    }
    return Document(obj, ("The gateway's settings (docs/configuration.md). No secrets here.",))


def _replicas(ctx: Context) -> Any:
    n = ctx.settings.gateway.replicas
    if ctx.plan.embedded and ctx.plan.replicas.value > n:
        return ctx.noted(ctx.plan.replicas)
    if ctx.plan.embedded:
        why = f"each pod runs one embedded engine: the plan's {ctx.plan.replicas.value}, at least 2"
        return Noted(n, why)
    return Noted(n, "gateway.replicas: at least 2, so one can be drained (the PDB)")


def _container(ctx: Context) -> dict[str, Any]:
    g = ctx.settings.gateway
    _, tmp_mount = tmp_volume()
    _, weight_mounts = weights.volumes(ctx, COMPONENT) if ctx.plan.embedded else ([], [])
    # Liveness is the process answering, not /health: that one reports the replicas too, and
    # a gateway restarted while vLLM loads its weights would not bring them sooner.
    alive = {"tcpSocket": {"port": "http"}, "periodSeconds": 10}
    return {
        "name": "gateway",
        "image": Noted(
            ctx.settings.images.gateway, "images.gateway: build it (docs/kubernetes.md)"
        ),
        "command": ["sovllm", "serve", "--config", f"{CONFIG_DIR}/sovllm.yaml"],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            *postgres.database_env(ctx),
        ],
        "ports": [{"name": "http", "containerPort": g.port, "protocol": "TCP"}],
        "resources": resources(g.cpu, g.memory),
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {**alive, "failureThreshold": 6},
        "startupProbe": {**alive, "failureThreshold": 60},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "keys", "mountPath": SECRETS_DIR, "readOnly": True},
            {"name": "data", "mountPath": "/var/lib/sovllm"},
            tmp_mount,
            *weight_mounts,
        ],
    }


def deployment(ctx: Context) -> Document:
    tmp_vol, _ = tmp_volume()
    weight_vols = weights.volumes(ctx, COMPONENT)[0] if ctx.plan.embedded else []
    selector = labels(COMPONENT)
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": 45,
        "initContainers": weights.init_containers(ctx, COMPONENT) if ctx.plan.embedded else [],
        "containers": [_container(ctx)],
        "volumes": [
            {"name": "config", "configMap": {"name": CONFIG_NAME}},
            # 0440 with the pod's fsGroup: the files belong to root, readable by this pod only.
            {
                "name": "keys",
                "secret": {"secretName": secrets.KEYS_NAME, "defaultMode": Noted(0o440, "0440")},
            },
            {"name": "data", "emptyDir": {"sizeLimit": "2Gi"}},
            tmp_vol,
            *weight_vols,
        ],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
    }
    if not pod["initContainers"]:
        del pod["initContainers"]
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(ctx, NAME, COMPONENT),
        "spec": {
            "replicas": _replicas(ctx),
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector}, "spec": pod},
        },
    }
    return Document(obj, ("The gateway: keys, quotas, audit, routing over the replicas.",))


def disruption_budget(ctx: Context) -> Document:
    obj = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(ctx, NAME, COMPONENT),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels(COMPONENT)}},
    }
    return Document(obj, ("A node drain keeps one gateway serving.",))


def service(ctx: Context) -> Document:
    port = ctx.settings.gateway.port
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(ctx, NAME, COMPONENT),
        "spec": {
            "selector": labels(COMPONENT),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return Document(obj, ("The API: expose it with your Ingress or Gateway API route (TLS).",))


def documents(ctx: Context) -> list[Document]:
    docs = [configmap(ctx), deployment(ctx), disruption_budget(ctx), service(ctx)]
    if ctx.plan.embedded:
        docs[:0] = weights.hashes_configmap(ctx, COMPONENT)
    return docs
