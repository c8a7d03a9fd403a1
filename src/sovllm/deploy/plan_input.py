"""The figures a deployment takes from a plan: `sovllm plan size --json` (its recommendation) or
`sovllm plan predict --json` (the one configuration it predicted).

Each figure keeps the JSON path it came from, so the manifests can say so in a comment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovllm.planner.workload import Lengths

SIZE_SCHEMA = "sovllm.plan.size/v1"
PREDICT_SCHEMA = "sovllm.plan.predict/v1"
# The GPU memory share the planner assumes usable (planner/memory.py: usable = 0.90 x memory).
_DEFAULT_UTILIZATION = 0.9


class PlanError(Exception):
    """The plan file cannot be read, or it is not a plan this command can deploy."""


@dataclass(frozen=True)
class Figure:
    """A number from the plan and where in plan.json it was read."""

    value: Any
    source: str


@dataclass(frozen=True)
class DeployPlan:
    """One replica group: what serves, on what, how many."""

    kind: str  # "plan size" or "plan predict"
    model: str
    gpu: str
    engine: str
    precision: str
    tp: Figure
    replicas: Figure
    max_model_len: Figure
    gpu_memory_utilization: Figure
    ttft_p95_slo_s: Figure
    users: Figure | None

    @property
    def embedded(self) -> bool:
        """The plan is for the embedded llama.cpp engine on CPUs: no vLLM pods."""
        return self.gpu == "cpu-local" or self.engine.startswith("llamacpp")

    @property
    def slug(self) -> str:
        """The model as a DNS label fragment: llama-3.3-70b -> llama-3-3-70b."""
        name = Path(self.model).stem if "/" in self.model else self.model
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "model"


def read_plan(path: Path) -> DeployPlan:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read the plan {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PlanError(f"{path} is not JSON ({exc}); write it with --json") from None
    if not isinstance(doc, dict):
        raise PlanError(f"{path} is not a plan: expected a JSON object")
    schema = doc.get("schema")
    try:
        if schema == SIZE_SCHEMA:
            return _from_size(doc)
        if schema == PREDICT_SCHEMA:
            return _from_predict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{path}: a {schema} document without the field {exc}") from None
    raise PlanError(
        f"{path} has schema {schema!r}; expected the output of `sovllm plan size --json` "
        f"({SIZE_SCHEMA}) or `sovllm plan predict --json` ({PREDICT_SCHEMA})"
    )


def _utilization(memory: dict[str, Any], at: str) -> Figure:
    gpu_gb, usable_gb = memory.get("gpu_memory_gb"), memory.get("usable_gb")
    if gpu_gb and usable_gb:
        share = round(float(usable_gb) / float(gpu_gb), 2)
        return Figure(share, f"{at}.usable_gb / gpu_memory_gb = {usable_gb} / {gpu_gb}")
    return Figure(_DEFAULT_UTILIZATION, "the planner's usable share of GPU memory")


def _from_size(doc: dict[str, Any]) -> DeployPlan:
    inputs, best = doc["inputs"], doc["recommendation"]
    if not best:
        raise PlanError(
            "the plan has no recommendation: no configuration met the SLO "
            "(see its 'rejected' list); size again, or deploy one with `plan predict --json`"
        )
    precision = best["precision"]
    context = doc["model_memory"][precision]["context_tokens"]
    at = "recommendation"
    return DeployPlan(
        kind="plan size",
        model=inputs["model"],
        gpu=best["gpu"],
        engine=inputs["engine"],
        precision=precision,
        tp=Figure(int(best["tp"]), f"{at}.tp"),
        replicas=Figure(int(best["replicas"]), f"{at}.replicas"),
        max_model_len=Figure(
            int(context), f"model_memory.{precision}.context_tokens (prompt + output, planned)"
        ),
        gpu_memory_utilization=_utilization(best["memory"], f"{at}.memory"),
        ttft_p95_slo_s=Figure(float(inputs["ttft_p95_s"]), "inputs.ttft_p95_s (the SLO)"),
        users=Figure(int(inputs["users"]), "inputs.users"),
    )


def _from_predict(doc: dict[str, Any]) -> DeployPlan:
    inputs = doc["inputs"]
    if not doc.get("fits", False):
        raise PlanError(f"the predicted configuration does not fit: {doc.get('reason', '')}")
    if int(inputs.get("pp", 1)) != 1:
        raise PlanError(
            "pipeline parallelism (pp > 1) spans nodes; this generator makes one pod a replica"
        )
    context = Lengths.parse(str(inputs["input_tokens"])).hi
    context += Lengths.parse(str(inputs["output_tokens"])).hi
    load = inputs.get("load") or {}
    users = Figure(int(load["value"]), "inputs.load.value") if load.get("kind") == "users" else None
    return DeployPlan(
        kind="plan predict",
        model=inputs["model"],
        gpu=inputs["gpu"],
        engine=inputs["engine"],
        precision=inputs["precision"],
        tp=Figure(int(inputs["tp"]), "inputs.tp"),
        replicas=Figure(int(doc["replicas"]), "replicas"),
        max_model_len=Figure(context, "inputs.input_tokens + output_tokens, largest"),
        gpu_memory_utilization=_utilization(doc["memory"], "memory"),
        ttft_p95_slo_s=Figure(
            round(2 * float(doc["ttft_s"]["p95"]), 3), "2 x ttft_s.p95 (predicted; no SLO)"
        ),
        users=users,
    )
