"""One replica group of vLLM servers: a Deployment (each pod one replica, spread over its GPUs
by tensor parallelism) and the headless Service whose name resolves to one address per ready
pod (what the gateway's DNS discovery reads)."""

from __future__ import annotations

from typing import Any

from sovllm.deploy import weights
from sovllm.deploy.kube import (
    Context,
    container_security,
    labels,
    meta,
    pod_security,
    resources,
    tmp_volume,
)
from sovllm.deploy.yamlout import Document, Noted

COMPONENT = "vllm"
PORT = 8000
# The label that tells the balanced Service from the headless one (ServiceMonitor, metrics).
ROLE = "sovllm.io/service-role"


def _args(ctx: Context) -> list[Any]:
    """vLLM's flags. --max-num-seqs is left at vLLM's default: the plan simulated that one."""
    p = ctx.plan
    return [
        "serve",
        weights.model_path(ctx),
        "--served-model-name",
        ctx.served_model_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--tensor-parallel-size",
        Noted(str(p.tp.value), f"{p.kind}: {p.tp.source}"),
        "--max-model-len",
        Noted(str(p.max_model_len.value), f"{p.kind}: {p.max_model_len.source}"),
        "--gpu-memory-utilization",
        Noted(
            str(p.gpu_memory_utilization.value),
            f"{p.kind}: {p.gpu_memory_utilization.source}",
        ),
        "--enable-prefix-caching",
    ]


def _container(ctx: Context) -> dict[str, Any]:
    tp = ctx.plan.tp.value
    v = ctx.settings.vllm
    gpus = Noted(tp, f"= --tensor-parallel-size ({ctx.plan.kind}: {ctx.plan.tp.source})")
    _, tmp_mount = tmp_volume()
    _, weight_mounts = weights.volumes(ctx, COMPONENT)
    return {
        "name": "vllm",
        "image": ctx.settings.images.vllm,
        "command": ["vllm"],
        "args": _args(ctx),
        "env": [
            # A read-only root: every cache goes to /tmp; nothing is fetched (offline).
            {"name": "HOME", "value": "/tmp"},
            {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            {"name": "DO_NOT_TRACK", "value": "1"},
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": resources(
            str(v.cpu_per_gpu * tp), f"{v.memory_gi_per_gpu * tp}Gi", {"nvidia.com/gpu": gpus}
        ),
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        # Loading a 70B model takes minutes: liveness starts counting after the start-up probe.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": v.startup_minutes * 6,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": container_security(),
        "volumeMounts": [
            *weight_mounts,
            {"name": "dshm", "mountPath": "/dev/shm"},
            tmp_mount,
        ],
    }


def deployment(ctx: Context) -> Document:
    v = ctx.settings.vllm
    tmp_vol, _ = tmp_volume()
    weight_vols, _ = weights.volumes(ctx, COMPONENT)
    selector = labels(COMPONENT, ctx.group)
    spec: dict[str, Any] = {
        "replicas": ctx.noted(ctx.plan.replicas),
        "selector": {"matchLabels": selector},
        # A rolling update would start a new pod beside the old one, waiting for GPUs the old
        # one holds: on a full node it never schedules. Recreate frees them first.
        "strategy": {"type": "Recreate"},
        "template": {
            "metadata": {"labels": selector},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": pod_security(),
                "terminationGracePeriodSeconds": 60,
                "initContainers": weights.init_containers(ctx, COMPONENT),
                "containers": [_container(ctx)],
                "volumes": [
                    *weight_vols,
                    # NCCL's shared-memory transport between the TP ranks of one pod.
                    {
                        "name": "dshm",
                        "emptyDir": {"medium": "Memory", "sizeLimit": f"{v.shm_gi}Gi"},
                    },
                    tmp_vol,
                ],
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            },
        },
    }
    header: tuple[str, ...] = (
        f"Replica group {ctx.group}: {ctx.plan.model} ({ctx.plan.precision}) on "
        f"{ctx.plan.gpu}, from `sovllm {ctx.plan.kind}`.",
        "Each pod is one replica; its GPUs are one tensor-parallel group.",
    )
    if ctx.plan.users is not None:
        users = ctx.plan.users
        header += (f"Sized for {users.value} users ({ctx.plan.kind}: {users.source}).",)
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(ctx, ctx.group, COMPONENT, ctx.group),
        "spec": spec,
    }
    return Document(obj, header)


def headless_service(ctx: Context) -> Document:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(ctx, ctx.group, COMPONENT, ctx.group),
        "spec": {
            "clusterIP": "None",
            "selector": labels(COMPONENT, ctx.group),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    header = (
        f"Headless: {ctx.group}.{ctx.namespace}.svc.cluster.local resolves to one A record per "
        "ready pod.",
    )
    return Document(obj, header)


def balanced_name(ctx: Context) -> str:
    return f"{ctx.group}-lb"


def balanced_service(ctx: Context) -> Document:
    """A ClusterIP Service over the same pods: the gateway's `url` until its pool discovers the
    pods one by one. Its name always resolves (a headless name has no address while no pod is
    ready, and the gateway checks its replicas' names at start)."""
    metadata = meta(ctx, balanced_name(ctx), COMPONENT, ctx.group)
    metadata["labels"][ROLE] = "balanced"
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": labels(COMPONENT, ctx.group),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    header = ("One virtual address over the ready pods, balanced per connection.",)
    return Document(obj, header)


def documents(ctx: Context) -> list[Document]:
    if ctx.plan.embedded:
        return []
    return [
        *weights.hashes_configmap(ctx, COMPONENT),
        deployment(ctx),
        headless_service(ctx),
        balanced_service(ctx),
    ]
