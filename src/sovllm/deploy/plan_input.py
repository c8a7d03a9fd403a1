"""The figures a deployment takes from a plan: `sovllm plan size --json` (its recommendation) or
`sovllm plan predict --json` (the one configuration it predicted).

Each figure keeps the JSON path it came from, so the manifests can say so in a comment.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovllm.planner.catalog import get_hardware, hardware_catalog
from sovllm.planner.errors import PlannerError
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
            plan = _from_size(doc)
        elif schema == PREDICT_SCHEMA:
            plan = _from_predict(doc)
        else:
            raise PlanError(
                f"{path} has schema {schema!r}; expected the output of `sovllm plan size --json` "
                f"({SIZE_SCHEMA}) or `sovllm plan predict --json` ({PREDICT_SCHEMA})"
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{path}: a {schema} document without the field {exc}") from None
    _check_gpu(plan)
    return plan


def _count(value: Any, at: str) -> int:
    """A whole number of at least 1: the plan is a file a person may have edited, and these
    figures become replica counts, GPU requests and engine flags."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"the plan's {at} must be a whole number of at least 1, got {value!r}")
    return value


def _positive(value: Any, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(f"the plan's {at} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise PlanError(f"the plan's {at} must be a finite number above 0, got {value!r}")
    return float(value)


def _name(value: Any, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PlanError(f"the plan's {at} must be a name, got {value!r}")
    return value


def _check_gpu(plan: DeployPlan) -> None:
    """The vLLM pods request `nvidia.com/gpu` on NVIDIA-labelled nodes and run the CUDA image:
    on any other GPU they would never schedule, so such a plan is refused, not deployed."""
    if plan.embedded:
        return  # cpu-local: the gateway pods run the engine, no GPU is requested
    try:
        hw = get_hardware(plan.gpu)
    except PlannerError as exc:
        raise PlanError(f"the plan's GPU: {exc}") from None
    if hw.vendor == "nvidia":
        return
    nvidia = ",".join(n for n, h in hardware_catalog().items() if h.vendor == "nvidia")
    again = (
        f"size again with `sovllm plan size … --gpus {nvidia}`"
        if plan.kind == "plan size"
        else f"predict for one of {nvidia} with `sovllm plan predict --gpu …`"
    )
    raise PlanError(
        f"the plan's GPU is {hw.name} ({hw.vendor.upper() or 'vendor not stated'}); the manifests "
        f"request nvidia.com/gpu and run the CUDA vLLM image, so only NVIDIA GPUs can be "
        f"deployed: {again}"
    )


def _utilization(memory: dict[str, Any], at: str) -> Figure:
    gpu_gb, usable_gb = memory.get("gpu_memory_gb"), memory.get("usable_gb")
    if gpu_gb is not None and usable_gb is not None:
        share = round(
            _positive(usable_gb, f"{at}.usable_gb") / _positive(gpu_gb, f"{at}.gpu_memory_gb"), 2
        )
        if not 0 < share <= 1:
            raise PlanError(
                f"the plan's {at}.usable_gb ({usable_gb}) must be above 0 and at most "
                f"{at}.gpu_memory_gb ({gpu_gb})"
            )
        return Figure(share, f"{at}.usable_gb / gpu_memory_gb = {usable_gb} / {gpu_gb}")
    return Figure(_DEFAULT_UTILIZATION, "the planner's usable share of GPU memory")


def _from_size(doc: dict[str, Any]) -> DeployPlan:
    inputs, best = doc["inputs"], doc["recommendation"]
    if not best:
        raise PlanError(
            "the plan has no recommendation: no configuration met the SLO "
            "(see its 'rejected' list); size again, or deploy one with `plan predict --json`"
        )
    at = "recommendation"
    precision = _name(best["precision"], f"{at}.precision")
    context = doc["model_memory"][precision]["context_tokens"]
    return DeployPlan(
        kind="plan size",
        model=_name(inputs["model"], "inputs.model"),
        gpu=_name(best["gpu"], f"{at}.gpu"),
        engine=_name(inputs["engine"], "inputs.engine"),
        precision=precision,
        tp=Figure(_count(best["tp"], f"{at}.tp"), f"{at}.tp"),
        replicas=Figure(_count(best["replicas"], f"{at}.replicas"), f"{at}.replicas"),
        max_model_len=Figure(
            _count(context, f"model_memory.{precision}.context_tokens"),
            f"model_memory.{precision}.context_tokens (prompt + output, planned)",
        ),
        gpu_memory_utilization=_utilization(best["memory"], f"{at}.memory"),
        ttft_p95_slo_s=Figure(
            _positive(inputs["ttft_p95_s"], "inputs.ttft_p95_s"), "inputs.ttft_p95_s (the SLO)"
        ),
        users=Figure(_count(inputs["users"], "inputs.users"), "inputs.users"),
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
    users = (
        Figure(_count(load["value"], "inputs.load.value"), "inputs.load.value")
        if load.get("kind") == "users"
        else None
    )
    return DeployPlan(
        kind="plan predict",
        model=_name(inputs["model"], "inputs.model"),
        gpu=_name(inputs["gpu"], "inputs.gpu"),
        engine=_name(inputs["engine"], "inputs.engine"),
        precision=_name(inputs["precision"], "inputs.precision"),
        tp=Figure(_count(inputs["tp"], "inputs.tp"), "inputs.tp"),
        replicas=Figure(_count(doc["replicas"], "replicas"), "replicas"),
        max_model_len=Figure(
            _count(context, "inputs.input_tokens + output_tokens"),
            "inputs.input_tokens + output_tokens, largest",
        ),
        gpu_memory_utilization=_utilization(doc["memory"], "memory"),
        ttft_p95_slo_s=Figure(
            round(2 * _positive(doc["ttft_s"]["p95"], "ttft_s.p95"), 3),
            "2 x ttft_s.p95 (predicted; no SLO)",
        ),
        users=users,
    )
