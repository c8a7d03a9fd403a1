"""The model's weights in a pod: the read-only volume, the ConfigMap holding their expected
SHA-256 (the allow-list), and the init container that checks them before the server starts.

A pod whose weights differ from the allow-list never starts: `sha256sum -c` exits non-zero,
and so does an empty list (a list nobody filled is not a pass).
"""

from __future__ import annotations

from typing import Any

from sovllm.deploy.kube import Context, container_security, meta, resources
from sovllm.deploy.yamlout import Document

MOUNT = "/models"
_HASHES_MOUNT = "/etc/sovllm/weights"


def hashes_name(ctx: Context, component: str) -> str:
    owner = ctx.group if component == "vllm" else component
    return f"{owner}-weights-sha256"


def model_path(ctx: Context) -> str:
    """Where the server finds the model inside the pod."""
    path = ctx.settings.weights.path.strip("/")
    if ctx.settings.weights.source == "image":
        return path or ctx.plan.model
    return f"{MOUNT}/{path}" if path else MOUNT


def volumes(ctx: Context, component: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's weight volumes and the server container's mounts of them."""
    w = ctx.settings.weights
    if w.source == "image":
        return [], []
    if w.source == "pvc":
        source: dict[str, Any] = {"persistentVolumeClaim": {"claimName": w.claim, "readOnly": True}}
    else:
        source = {"hostPath": {"path": w.host_path, "type": "Directory"}}
    vols = [
        {"name": "weights", **source},
        {"name": "weights-sha256", "configMap": {"name": hashes_name(ctx, component)}},
    ]
    return vols, [{"name": "weights", "mountPath": MOUNT, "readOnly": True}]


def init_containers(ctx: Context, component: str) -> list[dict[str, Any]]:
    if ctx.settings.weights.source == "image":
        return []
    return [
        {
            "name": "verify-weights",
            "image": ctx.settings.images.checker,
            "command": ["sh", "-c", f"cd {MOUNT} && sha256sum -c {_HASHES_MOUNT}/SHA256SUMS"],
            "resources": resources("1", "256Mi"),
            "securityContext": container_security(),
            "volumeMounts": [
                {"name": "weights", "mountPath": MOUNT, "readOnly": True},
                {"name": "weights-sha256", "mountPath": _HASHES_MOUNT, "readOnly": True},
            ],
        }
    ]


def hashes_configmap(ctx: Context, component: str) -> list[Document]:
    w = ctx.settings.weights
    if w.source == "image":
        return []
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(w.sha256.items()))
    header = [
        "The weights' allow-list: one `SHA-256  path` line per file, paths inside the volume.",
        "The init container runs `sha256sum -c` on it; an empty list never passes.",
    ]
    if not lines:
        header.append(
            "EMPTY: fill `weights.sha256` in deploy.yaml, e.g. from "
            "`cd VOLUME && find MODEL -type f -exec sha256sum {} +`."
        )
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(ctx, hashes_name(ctx, component), component),
        "data": {"SHA256SUMS": lines},
    }
    return [Document(obj, tuple(header))]
