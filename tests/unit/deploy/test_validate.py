"""The offline validation and the invariant checks reject what they must: each test breaks a
valid object in one way and expects that one problem named."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from sovllm.deploy.checks import check_all
from sovllm.deploy.kube import Context
from sovllm.deploy.plan_input import read_plan
from sovllm.deploy.render import render
from sovllm.deploy.settings import KUBERNETES_VERSION, load_deploy_settings
from sovllm.deploy.validate import CRD_FILES, validate_all, validate_object
from sovllm.deploy.yamlout import plain

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def valid(article_plan: Path) -> Objects:
    ctx = Context(read_plan(article_plan), load_deploy_settings(None, []))
    objs = [plain(d.obj) for d in render(ctx).documents()]
    assert validate_all(objs, KUBERNETES_VERSION) == [] and check_all(objs) == []
    return objs


def find(objs: Objects, kind: str, prefix: str = "") -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix))


def vllm_container(objs: Objects) -> dict[str, Any]:
    c: dict[str, Any] = find(objs, "Deployment", "vllm-")["spec"]["template"]["spec"]["containers"][
        0
    ]
    return c


def _unknown_field(objs: Objects) -> None:
    find(objs, "Service")["spec"]["bogus"] = 1


def _wrong_type(objs: Objects) -> None:
    find(objs, "Deployment")["spec"]["replicas"] = "two"


def _keda_unknown(objs: Objects) -> None:
    find(objs, "ScaledObject")["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's


def _cnpg_minimum(objs: Objects) -> None:
    find(objs, "Cluster")["spec"]["instances"] = 0


def _rule_without_expr(objs: Objects) -> None:
    del find(objs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["expr"]


def _monitor_typo(objs: Objects) -> None:
    find(objs, "ServiceMonitor")["spec"]["endpoints"][0]["intervall"] = "15s"


@pytest.mark.parametrize(
    ("breaks", "said"),
    [
        (_unknown_field, "'bogus' was unexpected"),
        (_wrong_type, "spec.replicas: 'two' is not of type"),
        (_keda_unknown, "ScaledObject/vllm-llama-3-3-70b: spec: Additional properties"),
        (_cnpg_minimum, "Cluster/sovllm-db: spec.instances: 0 is less than the minimum"),
        (_rule_without_expr, "'expr' is a required property"),
        (_monitor_typo, "'intervall' was unexpected"),
    ],
)
def test_the_validator_rejects_a_broken_object(
    valid: Objects, breaks: Callable[[Objects], None], said: str
) -> None:
    objs = copy.deepcopy(valid)
    breaks(objs)
    found = validate_all(objs, KUBERNETES_VERSION)
    assert len(found) == 1 and said in found[0], found


def test_an_unknown_kind_has_no_schema() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate_object(obj, KUBERNETES_VERSION) == [
        "Widget/w: no schema for example.com/v1 Widget in Kubernetes 1.33.0"
    ]


def _gpus_not_tp(objs: Objects) -> None:
    vllm_container(objs)["resources"]["limits"]["nvidia.com/gpu"] = 8


def _no_policy(objs: Objects) -> None:
    objs[:] = [o for o in objs if o["metadata"]["name"] != "database"]


def _no_default(objs: Objects) -> None:
    objs[:] = [o for o in objs if o["metadata"]["name"] != "default-deny"]


def _secret_in_configmap(objs: Objects) -> None:
    config = find(objs, "ConfigMap", "sovllm-gateway")
    config["data"]["sovllm.yaml"] += "database_url: postgresql+psycopg://app:hunter2@db/sovllm\n"


def _key_in_configmap(objs: Objects) -> None:
    find(objs, "ConfigMap", "sovllm-gateway")["data"]["master.key"] = "A" * 43 + "="


def _root(objs: Objects) -> None:
    find(objs, "Deployment", "sovllm-gateway")["spec"]["template"]["spec"]["securityContext"][
        "runAsNonRoot"
    ] = False
    del find(objs, "Deployment", "sovllm-gateway")["spec"]["template"]["spec"]["containers"][0][
        "securityContext"
    ]["runAsNonRoot"]


def _no_limits(objs: Objects) -> None:
    del vllm_container(objs)["resources"]["limits"]["memory"]


@pytest.mark.parametrize(
    ("breaks", "said"),
    [
        (_gpus_not_tp, "has 8 GPUs but TP 4"),
        (_no_policy, "Cluster/sovllm-db: no NetworkPolicy of its own"),
        (_no_default, "Deployment/vllm-llama-3-3-70b: no NetworkPolicy governs its egress"),
        (_secret_in_configmap, "ConfigMap/sovllm-gateway-config: sovllm.yaml looks like"),
        (_key_in_configmap, "master.key looks like it holds a secret"),
        (_root, "container gateway may run as root"),
        (_no_limits, "container vllm has no CPU or memory limit"),
    ],
)
def test_the_invariants_catch_a_broken_base(
    valid: Objects, breaks: Callable[[Objects], None], said: str
) -> None:
    objs = copy.deepcopy(valid)
    breaks(objs)
    found = check_all(objs)
    assert len(found) >= 1 and any(said in line for line in found), found


def test_the_vendored_crds_are_the_recorded_upstream_files() -> None:
    """Each CRD's SHA-256 is the one its README records (and ../shared's README)."""
    folder = resources.files("sovllm.deploy") / "crds"
    readme = (folder / "README.md").read_text(encoding="utf-8")
    for name in CRD_FILES:
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        row = next(line for line in readme.splitlines() if line.startswith(f"| {name} "))
        assert re.search(rf"\b{digest}\b", row), name
