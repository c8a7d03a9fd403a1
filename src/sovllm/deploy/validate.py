"""Offline validation of every generated object, without a cluster.

- Built-in kinds: `kubernetes-validate`'s strict schemas for the pinned Kubernetes release
  (settings.KUBERNETES_VERSION): unknown fields are errors, as `kubectl apply` (strict field
  validation) makes them.
- KEDA, prometheus-operator and CloudNativePG kinds: `jsonschema` over the vendored CRDs'
  `openAPIV3Schema` (crds/README.md). An object with properties and no
  `additionalProperties`/`x-kubernetes-preserve-unknown-fields` is closed here too, since the
  API server prunes or (strict) rejects unknown fields there.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

CRD_FILES = (
    "keda.sh_scaledobjects.yaml",
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
    "postgresql.cnpg.io_clusters.yaml",
)
# The PrometheusRule CRD's one pattern Python's `re` rejects (a global flag mid-expression).
_PATTERN_FIXES = {"^(?i)(abort|warn)?$": "(?i)^(abort|warn)?$"}


def _closed(node: Any) -> Any:
    """The schema with every declared object closed and Python-compatible patterns."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items()}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = _PATTERN_FIXES.get(out["pattern"], out["pattern"])
    open_ = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if "properties" in node and not open_:
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> its closed openAPIV3Schema, from the vendored CRDs."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    folder = resources.files("sovllm.deploy") / "crds"
    for name in CRD_FILES:
        crd = yaml.safe_load((folder / name).read_text(encoding="utf-8"))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top)"


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def validate_object(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """The object's problems, one line each; empty when it is valid."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    schema = crd_schemas().get(key)
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        return [f"{_name(obj)}: {_where(e.absolute_path)}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_name(obj)}: {_where(exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{_name(obj)}: no schema for {key[0]} {key[1]} in Kubernetes {kubernetes_version}"]
    return []


def validate_all(objects: list[dict[str, Any]], kubernetes_version: str) -> list[str]:
    return [line for obj in objects for line in validate_object(obj, kubernetes_version)]
