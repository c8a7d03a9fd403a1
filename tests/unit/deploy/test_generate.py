"""`sovllm deploy kubernetes` on the article's case and on a small CPU case: what it writes,
that every object validates offline, and the invariants (GPUs = TP, a NetworkPolicy for every
pod, no secret in a ConfigMap, every container non-root with limits)."""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sovllm.cli.main import app
from sovllm.config import Settings
from sovllm.deploy.checks import check_all
from sovllm.deploy.kube import Context
from sovllm.deploy.plan_input import read_plan
from sovllm.deploy.render import problems, render
from sovllm.deploy.settings import KUBERNETES_VERSION, load_deploy_settings
from sovllm.deploy.validate import validate_all
from tests.unit.deploy.conftest import ARTICLE, plan_file

# One H100 serving an 8B model: a plan predict --json the deploy command takes.
PREDICT_H100 = ["plan", "predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm"]
PREDICT_H100 += ["--input-tokens", "500", "--output-tokens", "200", "--users", "10", "--json"]

runner = CliRunner()


def deploy(plan: Path, out: Path, *args: str) -> Any:
    return runner.invoke(
        app, ["deploy", "kubernetes", "--plan", str(plan), "--out", str(out), *args]
    )


def read_dir(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(out.glob("*.yaml"))}


def objects(files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [o for name, docs in files.items() if name != "kustomization.yaml" for o in docs]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def test_the_article_case_writes_a_valid_base(article_plan: Path, tmp_path: Path) -> None:
    res = deploy(article_plan, tmp_path / "deploy")
    assert res.exit_code == 0, res.output
    files = read_dir(tmp_path / "deploy")
    objs = objects(files)
    assert validate_all(objs, KUBERNETES_VERSION) == []
    assert check_all(objs) == []
    kinds = {o["kind"] for o in objs}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "Cluster",
        "NetworkPolicy",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    # The base lists every file but the Secrets' placeholders (an apply would reset the keys).
    kust = files["kustomization.yaml"][0]
    assert set(kust["resources"]) == set(files) - {"kustomization.yaml", "secrets.example.yaml"}
    assert kust["namespace"] == "sovllm"


def test_gpus_replicas_and_flags_come_from_the_plan(article_plan: Path) -> None:
    plan = read_plan(article_plan)
    best = __import__("json").loads(article_plan.read_text())["recommendation"]
    ctx = Context(plan, load_deploy_settings(None, []))
    objs = [o for o in _plain(ctx) if o["kind"] == "Deployment"]
    vllm = next(o for o in objs if o["metadata"]["name"].startswith("vllm-"))
    assert vllm["spec"]["replicas"] == best["replicas"]
    assert vllm["spec"]["strategy"] == {"type": "Recreate"}
    pod = vllm["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == str(best["tp"]) == "4"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == best["tp"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == best["tp"]
    assert "--enable-prefix-caching" in args
    assert args[args.index("--served-model-name") + 1] == "llama-3.3-70b"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    weights = next(v for v in pod["volumes"] if v["name"] == "weights")
    assert weights["persistentVolumeClaim"]["readOnly"] is True
    (init,) = pod["initContainers"]
    assert "sha256sum -c" in init["command"][-1]
    svc = next(
        o
        for o in _plain(ctx)
        if o["kind"] == "Service" and o["metadata"]["name"] == vllm["metadata"]["name"]
    )
    assert svc["spec"]["clusterIP"] == "None"
    (scaled,) = [o for o in _plain(ctx) if o["kind"] == "ScaledObject"]
    assert scaled["spec"]["minReplicaCount"] == best["replicas"]
    assert scaled["spec"]["maxReplicaCount"] == 2 * best["replicas"]
    assert "vllm:num_requests_waiting" in scaled["spec"]["triggers"][0]["metadata"]["query"]
    (rule,) = [o for o in _plain(ctx) if o["kind"] == "PrometheusRule"]
    slo = [
        r["expr"]
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("record") == "sovllm:ttft_p95_slo_seconds"
    ]
    assert slo == ["vector(0.5)"]  # the plan's TTFT p95 SLO, in the shipped alerts.yaml's rules


def _plain(ctx: Context) -> list[dict[str, Any]]:
    from sovllm.deploy.yamlout import plain

    return [plain(d.obj) for d in render(ctx).documents()]


def test_comments_name_the_plan_figures(article_plan: Path, tmp_path: Path) -> None:
    assert deploy(article_plan, tmp_path).exit_code == 0
    text = next(tmp_path.glob("vllm-*.yaml")).read_text()
    assert '- "4"  # plan size: recommendation.tp' in text
    assert "nvidia.com/gpu: 4  # = --tensor-parallel-size (plan size: recommendation.tp)" in text
    assert "replicas: 1  # plan size: recommendation.replicas" in text
    assert "# plan size: model_memory.fp16.context_tokens" in text


def test_the_output_is_deterministic(article_plan: Path, tmp_path: Path) -> None:
    assert deploy(article_plan, tmp_path / "a").exit_code == 0
    assert deploy(article_plan, tmp_path / "b").exit_code == 0
    a = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    b = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert a == b


def test_the_small_cpu_case_runs_the_engine_in_the_gateway(
    small_plan: Path, tmp_path: Path
) -> None:
    res = deploy(small_plan, tmp_path, "--set", "weights.path=smollm2-135m.Q8_0.gguf")
    assert res.exit_code == 0, res.output
    objs = objects(read_dir(tmp_path))
    assert validate_all(objs, KUBERNETES_VERSION) == [] and check_all(objs) == []
    (gw,) = by_kind(objs, "Deployment")
    assert gw["metadata"]["name"] == "sovllm-gateway" and gw["spec"]["replicas"] == 2
    assert by_kind(objs, "ScaledObject") == []
    (c,) = gw["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    config = yaml.safe_load(by_kind(objs, "ConfigMap")[-1]["data"]["sovllm.yaml"])
    assert "replicas" not in config and config["model"] == "/models/smollm2-135m.Q8_0.gguf"


@pytest.mark.parametrize("case", ["article_plan", "small_plan"])
def test_the_gateway_settings_load(
    case: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The ConfigMap's sovllm.yaml is a settings file `sovllm serve` accepts, once the
    Secret's keys are where it says (here: real keys in a temporary folder)."""
    plan = request.getfixturevalue(case)
    ctx = Context(read_plan(plan), load_deploy_settings(None, []))
    config = next(o for o in _plain(ctx) if o["metadata"]["name"] == "sovllm-gateway-config")
    doc = yaml.safe_load(config["data"]["sovllm.yaml"])
    for section, field in [
        ("audit", "key_file"),
        ("privacy", "master_key_file"),
        ("privacy", "pseudonym_key_file"),
    ]:
        key = tmp_path / Path(doc[section][field]).name
        key.write_text(base64.b64encode(os.urandom(32)).decode())
        doc[section][field] = str(key)
    settings = Settings(**doc)
    assert settings.host == "0.0.0.0" and str(settings.data_dir) == "/var/lib/sovllm/data"


def test_external_postgres_and_hpa(article_plan: Path, tmp_path: Path) -> None:
    res = deploy(article_plan, tmp_path, "--postgres", "external", "--set", "scaling.mode=hpa")
    assert res.exit_code == 0, res.output
    files = read_dir(tmp_path)
    objs = objects(files)
    assert by_kind(objs, "Cluster") == [] and by_kind(objs, "ScaledObject") == []
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 1
    names = {o["metadata"]["name"] for o in files["secrets.example.yaml"]}
    assert names == {"sovllm-keys", "sovllm-database-url"}
    gw = next(o for o in by_kind(objs, "Deployment") if o["metadata"]["name"] == "sovllm-gateway")
    env = gw["spec"]["template"]["spec"]["containers"][0]["env"]
    url = next(e for e in env if e["name"] == "SOVLLM_DATABASE_URL")
    assert url["valueFrom"]["secretKeyRef"]["name"] == "sovllm-database-url"
    assert validate_all(objs, KUBERNETES_VERSION) == [] and check_all(objs) == []


def test_overrides_reach_the_objects(article_plan: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text("namespace: llm\nimages:\n  vllm: registry.local/vllm:1\nstorage_class: fast\n")
    sha = "a" * 64
    res = deploy(
        article_plan,
        tmp_path / "out",
        "--config",
        str(cfg),
        "--set",
        f"weights.sha256={{model.safetensors: {sha}}}",
    )
    assert res.exit_code == 0, res.output
    objs = objects(read_dir(tmp_path / "out"))
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in objs} == {"llm"}
    vllm = next(o for o in by_kind(objs, "Deployment") if o["metadata"]["name"].startswith("vllm-"))
    assert vllm["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/vllm:1"
    (cluster,) = by_kind(objs, "Cluster")
    assert cluster["spec"]["storage"]["storageClass"] == "fast"
    hashes = next(
        o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-sha256")
    )
    assert hashes["data"]["SHA256SUMS"] == f"{sha}  model.safetensors\n"
    assert "weights.sha256 is empty" not in res.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--set", "images.vlm=x"], "images.vlm: unknown key"),
        (["--set", "namespace=Not_A_Label"], "namespace"),
        (["--set", "gateway.replicas=1"], "gateway.replicas"),
        (["--set", "novalue"], "expected key=value"),
        (["--set", "weights.sha256={a: nothex}"], "64 lowercase hex"),
        (["--postgres", "sqlite"], "cnpg or external"),
    ],
)
def test_bad_settings_are_named(
    article_plan: Path, tmp_path: Path, args: list[str], said: str
) -> None:
    res = deploy(article_plan, tmp_path / "out", *args)
    assert res.exit_code == 2
    assert said in res.output
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_no_plan_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text('{"schema": "something/v1"}')
    res = deploy(bad, tmp_path / "out")
    assert res.exit_code == 2 and "plan size --json" in res.output
    res = deploy(tmp_path / "missing.json", tmp_path / "out")
    assert res.exit_code == 2 and "cannot read the plan" in res.output


def _edited(plan: Path, out: Path, path: str, value: Any) -> Path:
    """The plan with the field at the dotted `path` set to `value`, as a person might edit it."""
    doc = json.loads(plan.read_text())
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value
    out.write_text(json.dumps(doc))
    return out


@pytest.mark.parametrize(
    ("path", "value", "said"),
    [
        ("recommendation.tp", -1, "recommendation.tp must be a whole number of at least 1, got -1"),
        ("recommendation.tp", 0, "recommendation.tp must be a whole number"),
        ("recommendation.tp", 2.5, "recommendation.tp must be a whole number"),
        ("recommendation.tp", "4", "recommendation.tp must be a whole number"),
        ("recommendation.replicas", 0, "recommendation.replicas must be a whole number"),
        ("inputs.users", -3, "inputs.users must be a whole number"),
        ("model_memory.fp16.context_tokens", -700, "context_tokens must be a whole number"),
        ("inputs.ttft_p95_s", 0, "inputs.ttft_p95_s must be a finite number above 0"),
        ("inputs.ttft_p95_s", math.inf, "inputs.ttft_p95_s must be a finite number above 0"),
        ("recommendation.memory.usable_gb", 100.0, "at most recommendation.memory.gpu_memory_gb"),
        ("recommendation.memory.gpu_memory_gb", -85.9, "gpu_memory_gb must be a finite number"),
        ("recommendation.gpu", 7, "recommendation.gpu must be a name"),
        ("recommendation.gpu", "h100-sxn", "unknown GPU 'h100-sxn'"),
    ],
)
def test_plan_figures_are_checked_and_named(
    article_plan: Path, tmp_path: Path, path: str, value: Any, said: str
) -> None:
    """A hand-edited plan whose figure cannot be deployed (it would become `nvidia.com/gpu: -1`,
    `replicas: 0`…) is refused naming the field; nothing is written."""
    plan = _edited(article_plan, tmp_path / "plan.json", path, value)
    res = deploy(plan, tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert said in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_a_predict_plan_with_a_negative_tp_is_refused(tmp_path: Path) -> None:
    plan = plan_file(PREDICT_H100, tmp_path / "predict.json")
    res = deploy(_edited(plan, tmp_path / "bad.json", "inputs.tp", -1), tmp_path / "out")
    assert res.exit_code == 2 and "inputs.tp must be a whole number" in res.output
    assert not (tmp_path / "out").exists()
    assert deploy(plan, tmp_path / "out").exit_code == 0  # unedited, it deploys


def _mi300x(arg: str) -> str:
    return "mi300x" if arg in ("a100-80gb-sxm", "h100-sxm") else arg


@pytest.mark.parametrize(
    ("args", "again"),
    [
        ([_mi300x(a) for a in ARTICLE], "sovllm plan size … --gpus a100-40gb-sxm,"),
        ([_mi300x(a) for a in PREDICT_H100], "sovllm plan predict --gpu"),
    ],
)
def test_a_plan_for_a_gpu_the_manifests_cannot_request_is_refused(
    tmp_path: Path, args: list[str], again: str
) -> None:
    """The manifests request `nvidia.com/gpu` and run the CUDA image: an MI300X plan (the
    cheapest for the README's 70B case when every GPU is allowed) would never schedule. The
    refusal names the GPU and how to plan for one that can be deployed."""
    plan = plan_file(args, tmp_path / "plan.json")
    res = deploy(plan, tmp_path / "out")
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "the plan's GPU is mi300x (AMD)" in said and "only NVIDIA GPUs" in said
    assert again in said and "mi300x" not in said.split(again)[1]
    assert not (tmp_path / "out").exists()


def test_a_manifest_that_does_not_validate_writes_nothing(
    article_plan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command refuses its own broken output (here a builder made to emit a Service port
    as a word): exit 1, the schema error named, no file written."""
    from sovllm.deploy import gateway

    real = gateway.service

    def broken(ctx: Context) -> Any:
        doc = real(ctx)
        doc.obj["spec"]["ports"][0]["port"] = "eighty"
        return doc

    monkeypatch.setattr(gateway, "service", broken)
    res = deploy(article_plan, tmp_path / "out")
    assert res.exit_code == 1
    assert "Service/sovllm-gateway: spec.ports.0.port" in res.output
    assert not (tmp_path / "out").exists()
    res = deploy(article_plan, tmp_path / "out", "--no-validate")
    assert res.exit_code == 0 and (tmp_path / "out" / "gateway.yaml").exists()


def test_problems_is_empty_for_both_cases(article_plan: Path, small_plan: Path) -> None:
    for plan in (article_plan, small_plan):
        ctx = Context(read_plan(plan), load_deploy_settings(None, []))
        assert problems(ctx, render(ctx)) == []


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "DoesNotExist"
        if expr["key"] in labels:
            return False
    return True


def test_the_gateway_discovers_the_vllm_pods_by_the_headless_name(article_plan: Path) -> None:
    """The gateway's replica group is discovered from the headless Service's name (one A record
    per ready pod: each pod a replica of its own); each ServiceMonitor scrapes one Service, so
    no pod is scraped twice."""
    ctx = Context(read_plan(article_plan), load_deploy_settings(None, []))
    objs = _plain(ctx)
    config = next(o for o in objs if o["metadata"]["name"] == "sovllm-gateway-config")
    (replica,) = yaml.safe_load(config["data"]["sovllm.yaml"])["replicas"]
    assert "url" not in replica and replica["discovery"]["kind"] == "dns"
    host, namespace = replica["discovery"]["name"].split(".")[:2]
    assert replica["discovery"]["name"] == f"{host}.{namespace}.svc.cluster.local"
    assert namespace == ctx.namespace and replica["discovery"]["port"] == 8000
    services = {o["metadata"]["name"]: o for o in by_kind(objs, "Service")}
    vllm = next(o for o in by_kind(objs, "Deployment") if o["metadata"]["name"].startswith("vllm-"))
    pod_labels = vllm["spec"]["template"]["metadata"]["labels"]
    assert services[host]["spec"]["clusterIP"] == "None"
    assert services[host]["spec"]["selector"] == pod_labels
    assert host == vllm["metadata"]["name"]
    for monitor in by_kind(objs, "ServiceMonitor"):
        selected = [
            name
            for name, svc in services.items()
            if _matches(monitor["spec"]["selector"], svc["metadata"]["labels"])
        ]
        assert len(selected) == 1, (monitor["metadata"]["name"], selected)
