"""The invariants a generated base keeps, checked over the plain objects (what Kubernetes
reads), beside the schema validation:

- a container asking for GPUs runs vLLM with as many tensor-parallel ranks;
- every pod's ingress and egress are governed by NetworkPolicies, one of them its own;
- no ConfigMap holds secret material (keys, passwords, a Secret's value);
- every container runs as non-root, without privilege escalation, with CPU and memory limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

GPU = "nvidia.com/gpu"
_SECRETISH = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # a URL with a password
    re.compile(r"(?i)\b(password|passwd|secret|token)\s*[:=]\s*\S"),
    re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}=(?![A-Za-z0-9+/=])"),  # 32 bytes, base64
)


def _pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, str], dict[str, Any]]]:
    """(name, pod labels, pod spec) of every pod an object makes; a CloudNativePG Cluster's
    pods have only their labels here (the operator writes their spec)."""
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            template = obj["spec"]["template"]
            yield f"{kind}/{name}", template["metadata"]["labels"], template["spec"]
        elif kind == "Cluster":
            yield f"Cluster/{name}", {"cnpg.io/cluster": name}, {}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def gpus_match_tp(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    for where, _, spec in _pods(objects):
        for c in _containers(spec):
            limits = c.get("resources", {}).get("limits", {})
            if GPU not in limits:
                continue
            args = [*c.get("command", []), *c.get("args", [])]
            flag = "--tensor-parallel-size"
            tp = int(args[args.index(flag) + 1]) if flag in args else 1
            if int(limits[GPU]) != tp:
                problems.append(f"{where}: {c['name']} has {limits[GPU]} GPUs but TP {tp}")
            if c.get("resources", {}).get("requests", {}).get(GPU, limits[GPU]) != limits[GPU]:
                problems.append(f"{where}: {c['name']} requests other GPUs than its limit")
    return problems


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def every_pod_has_policies(objects: list[dict[str, Any]]) -> list[str]:
    """Each pod is denied by default (ingress and egress) and has an allow-list of its own (a
    policy whose selector names its labels): a default alone would leave it unreachable, an
    allow-list alone would leave everything else open."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    problems = []
    for where, labels, _ in _pods(objects):
        selecting = [p for p in policies if _selects(p, labels)]
        types = {t for p in selecting for t in p["spec"]["policyTypes"]}
        for needed in ("Ingress", "Egress"):
            if needed not in types:
                problems.append(f"{where}: no NetworkPolicy governs its {needed.lower()}")
        if not any(p["spec"]["podSelector"].get("matchLabels") for p in selecting):
            problems.append(f"{where}: no NetworkPolicy of its own (only the namespace default)")
    return problems


def no_secrets_in_configmaps(objects: list[dict[str, Any]]) -> list[str]:
    values = {
        str(v)
        for o in objects
        if o["kind"] == "Secret"
        for v in {**o.get("stringData", {}), **o.get("data", {})}.values()
    }
    problems = []
    for o in objects:
        if o["kind"] != "ConfigMap":
            continue
        for key, text in o.get("data", {}).items():
            where = f"ConfigMap/{o['metadata']['name']}: {key}"
            if any(p.search(text) for p in _SECRETISH):
                problems.append(f"{where} looks like it holds a secret")
            elif any(v and v in text for v in values):
                problems.append(f"{where} holds a Secret's value")
    return problems


def containers_locked_down(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    for where, _, spec in _pods(objects):
        pod_sc = spec.get("securityContext", {})
        for c in _containers(spec):
            sc = c.get("securityContext", {})
            name = f"{where}: container {c['name']}"
            if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False)):
                problems.append(f"{name} may run as root")
            if sc.get("allowPrivilegeEscalation", True):
                problems.append(f"{name} allows privilege escalation")
            limits = c.get("resources", {}).get("limits", {})
            if "cpu" not in limits or "memory" not in limits:
                problems.append(f"{name} has no CPU or memory limit")
    return problems


def check_all(objects: list[dict[str, Any]]) -> list[str]:
    return [
        *gpus_match_tp(objects),
        *every_pod_has_policies(objects),
        *no_secrets_in_configmaps(objects),
        *containers_locked_down(objects),
    ]
