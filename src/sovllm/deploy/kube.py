"""What every generated object shares: names, labels, the restricted security contexts, and the
context (plan + settings) the builders read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sovllm.deploy.plan_input import DeployPlan, Figure
from sovllm.deploy.settings import DeploySettings
from sovllm.deploy.yamlout import Noted

PART_OF = "sovllm"
# Any unprivileged id: the images must run without a user of their own (readOnlyRootFilesystem,
# HOME on an emptyDir).
RUN_AS = 10001


@dataclass(frozen=True)
class Context:
    plan: DeployPlan
    settings: DeploySettings

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def group(self) -> str:
        """The replica group's name: its Deployment, headless Service and ScaledObject."""
        return f"vllm-{self.plan.slug}"

    @property
    def served_model_name(self) -> str:
        return self.plan.model

    def noted(self, figure: Figure) -> Noted:
        return Noted(figure.value, f"{self.plan.kind}: {figure.source}")


def labels(component: str, group: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component}
    if group is not None:
        out["sovllm.io/replica-group"] = group
    return out


def meta(ctx: Context, name: str, component: str, group: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": ctx.namespace, "labels": labels(component, group)}


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(cpu: str, memory: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Requests equal to limits: a Guaranteed pod, never evicted first under memory pressure."""
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory, **(extra or {})}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """The writable /tmp a read-only root filesystem still needs (HOME and caches live there)."""
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "mountPath": "/tmp"},
    )
