"""What a deployment takes besides the plan: images, namespace, storage, weights, database,
scaling. Read from `--config deploy.yaml`, then `--set key=value` (dotted keys), and validated:
an unknown key or a wrong value is named in the error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sovllm import __version__

# kubernetes-validate checks the built-in kinds against this release's schemas.
KUBERNETES_VERSION = "1.33.0"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_SHA256 = r"^[0-9a-f]{64}$"


class DeployConfigError(Exception):
    """deploy.yaml or a --set is not valid: the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Images(_Strict):
    vllm: str = Field("vllm/vllm-openai:v0.11.0", min_length=1)
    gateway: str = Field(f"ghcr.io/sovllm/sovllm:{__version__}", min_length=1)
    # The init container's sha256sum: any image with coreutils or busybox.
    checker: str = Field("busybox:1.37", min_length=1)


class Weights(_Strict):
    """Where the model's files are. `pvc` mounts an existing claim read-only; `hostPath` a
    node folder; `image` means the serving image already holds them (nothing is checked)."""

    source: Literal["pvc", "hostPath", "image"] = "pvc"
    claim: str = Field("model-weights", pattern=_DNS_LABEL)
    host_path: str = Field("/srv/models", pattern=r"^/")
    # The folder inside the volume that vLLM loads (an HF snapshot) or the embedded GGUF file.
    path: str = Field("", description="Relative to the volume's root.")
    # One `sha256  relative/path` line per file: the allow-list the init container checks.
    sha256: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _hashes(self) -> Weights:
        import re

        for name, digest in self.sha256.items():
            if not re.match(_SHA256, digest):
                raise ValueError(f"weights.sha256[{name}] is not 64 lowercase hex digits")
            if name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"weights.sha256 names {name}: use a path inside the volume")
        return self


class Vllm(_Strict):
    """Host resources per GPU of a vLLM pod (loading and tokenizing run on the CPUs)."""

    cpu_per_gpu: int = Field(4, ge=1, le=64)
    memory_gi_per_gpu: int = Field(32, ge=1, le=1024)
    shm_gi: int = Field(16, ge=1, le=512, description="/dev/shm for NCCL (counts as memory).")
    startup_minutes: int = Field(20, ge=1, le=120, description="Time allowed to load weights.")


class Gateway(_Strict):
    replicas: int = Field(2, ge=2, le=64, description="At least 2: one may be drained.")
    cpu: str = "2"
    memory: str = "2Gi"
    port: int = Field(8000, ge=1, le=65535)


class Postgres(_Strict):
    mode: Literal["cnpg", "external"] = "cnpg"
    instances: int = Field(3, ge=1, le=9)
    storage_size: str = "20Gi"
    database: str = Field("sovllm", pattern=r"^[a-z_][a-z0-9_]*$")


class Scaling(_Strict):
    mode: Literal["keda", "hpa"] = "keda"
    # The plan sizes for its users: min = the plan's replicas; max = min x headroom unless set.
    max_replicas: int | None = Field(None, ge=1, le=64)
    headroom: float = Field(2.0, ge=1.0, le=16.0)
    waiting_per_replica: int = Field(
        4, ge=1, description="Requests waiting in vLLM per replica before one more starts."
    )
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"


class DeploySettings(_Strict):
    namespace: str = Field("sovllm", pattern=_DNS_LABEL)
    storage_class: str | None = Field(None, description="Default: the cluster's default class.")
    # Namespaces whose pods may reach the database (operators' tools, backups).
    operator_namespaces: list[str] = Field(default_factory=lambda: ["cnpg-system"])
    monitoring_namespace: str = Field("monitoring", pattern=_DNS_LABEL)
    images: Images = Field(default_factory=Images)
    weights: Weights = Field(default_factory=Weights)
    vllm: Vllm = Field(default_factory=Vllm)
    gateway: Gateway = Field(default_factory=Gateway)
    postgres: Postgres = Field(default_factory=Postgres)
    scaling: Scaling = Field(default_factory=Scaling)
    kubernetes_version: str = Field(KUBERNETES_VERSION, pattern=r"^1\.\d+\.\d+$")


def _set(tree: dict[str, Any], assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise DeployConfigError(f"--set {assignment!r}: expected key=value, e.g. namespace=llm")
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise DeployConfigError(f"--set {key}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        node[parts[-1]] = text


def load_deploy_settings(config: Path | None, assignments: list[str]) -> DeploySettings:
    tree: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DeployConfigError(f"cannot read {config}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise DeployConfigError(f"{config} is not YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise DeployConfigError(f"{config}: expected a mapping of settings")
        tree = loaded or {}
    for assignment in assignments:
        _set(tree, assignment)
    try:
        return DeploySettings.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top)"
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {what}")
        raise DeployConfigError("invalid deploy settings: " + "; ".join(problems)) from None
