"""The Kustomize base: one file per concern, `kustomization.yaml` listing them, and the Secrets'
placeholders beside it (not in the base: see secrets.py). The same plan and settings always
write the same bytes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovllm.deploy import gateway, monitoring, network, postgres, scaling, secrets, vllm
from sovllm.deploy.kube import Context
from sovllm.deploy.yamlout import Document, dump

KUSTOMIZATION = "kustomization.yaml"


@dataclass(frozen=True)
class Rendered:
    """File name -> its documents; `base` names the files kustomization.yaml lists."""

    files: dict[str, list[Document]]
    base: tuple[str, ...]

    def documents(self) -> list[Document]:
        """Every object written, the Secrets' placeholders included (they are validated too)."""
        return [doc for docs in self.files.values() for doc in docs]


def namespace(ctx: Context) -> Document:
    # hostPath volumes are refused by the baseline and restricted Pod Security levels; with
    # them the namespace can only warn.
    level = "privileged" if ctx.settings.weights.source == "hostPath" else "restricted"
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ctx.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "sovllm",
                "pod-security.kubernetes.io/enforce": level,
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }
    return Document(obj, ("Pod Security: restricted (the pods run as non-root, no privileges).",))


def render(ctx: Context) -> Rendered:
    files: dict[str, list[Document]] = {
        "namespace.yaml": [namespace(ctx)],
        f"{ctx.group}.yaml": vllm.documents(ctx),
        "gateway.yaml": gateway.documents(ctx),
        "database.yaml": postgres.documents(ctx),
        "network-policies.yaml": network.documents(ctx),
        "scaling.yaml": scaling.documents(ctx),
        "monitoring.yaml": monitoring.documents(ctx),
    }
    files = {name: docs for name, docs in files.items() if docs}
    base = tuple(files)
    files[secrets.FILE] = secrets.documents(ctx)
    return Rendered(files, base)


def kustomization(ctx: Context, rendered: Rendered) -> str:
    lines = [
        f"# Written by `sovllm deploy kubernetes` from `sovllm {ctx.plan.kind}` "
        f"({ctx.plan.model} on {ctx.plan.gpu}).",
        f"# Apply {secrets.FILE} (filled in) first, then: kubectl apply -k .",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        f"namespace: {ctx.namespace}",
        "resources:",
        *(f"- {name}" for name in rendered.base),
    ]
    return "\n".join(lines) + "\n"


def write(ctx: Context, out: Path) -> list[Path]:
    """Write the base into `out` (created if missing); returns the files written."""
    rendered = render(ctx)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, docs in rendered.files.items():
        path = out / name
        path.write_text(dump(docs), encoding="utf-8")
        written.append(path)
    path = out / KUSTOMIZATION
    path.write_text(kustomization(ctx, rendered), encoding="utf-8")
    written.append(path)
    return written


def problems(ctx: Context, rendered: Rendered) -> list[str]:
    """Schema errors and broken invariants of every object written, one line each."""
    from sovllm.deploy.checks import check_all
    from sovllm.deploy.validate import validate_all
    from sovllm.deploy.yamlout import plain

    objects = [plain(doc.obj) for doc in rendered.documents()]
    return [*validate_all(objects, ctx.settings.kubernetes_version), *check_all(objects)]
