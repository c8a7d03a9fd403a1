"""Two real plans from the planner's own command: the article's case (Llama-3.3-70B, 100 users,
A100-80GB) and a small one (one embedded llama.cpp replica on this machine's CPUs)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sovllm.cli.main import app

runner = CliRunner()

# docs/planner.md's A100 case, as docs/kubernetes.md walks it.
ARTICLE = [
    "plan",
    "size",
    "--model",
    "llama-3.3-70b",
    "--users",
    "100",
    "--prompt-tokens",
    "300-500",
    "--output-tokens",
    "200",
    "--think-time",
    "30",
    "--gpus",
    "a100-80gb-sxm",
    "--precisions",
    "fp16",
    "--ttft-p95",
    "0.5",
    "--tpot-p95",
    "0.05",
    "--json",
]
SMALL = [
    "plan",
    "predict",
    "--model",
    "smollm2-135m",
    "--gpu",
    "cpu-local",
    "--engine",
    "llamacpp",
    "--precision",
    "int4",
    "--input-tokens",
    "100-300",
    "--output-tokens",
    "100",
    "--users",
    "4",
    "--think-time",
    "10",
    "--json",
]


def plan_file(args: list[str], path: Path) -> Path:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    json.loads(res.stdout)
    path.write_text(res.stdout, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def article_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plan_file(ARTICLE, tmp_path_factory.mktemp("plans") / "article.json")


@dataclass(frozen=True)
class _Sample:
    batch: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float


def _measure_rates(model: str, batch_sizes: list[int], *args: Any, **kw: Any) -> list[_Sample]:
    # The shape measured on the dev box: ~83 tokens/s alone, ~150 at a batch of 32. A real
    # calibration takes minutes on two cores; the deploy tests need a cpu-local profile only.
    return [_Sample(b, 200.0, 83.0 * (1 + 0.8 * (min(b, 32) - 1) / 31)) for b in batch_sizes]


@pytest.fixture(scope="session")
def small_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    mod = types.ModuleType("sovllm.engines.llamacpp.calibrate")
    mod.measure_rates = _measure_rates  # type: ignore[attr-defined]
    # Undone before the fixture returns: the rest of the session sees the real module.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOVLLM_DATA_DIR", str(data))
        mp.setitem(sys.modules, "sovllm.engines.llamacpp.calibrate", mod)
        res = runner.invoke(app, ["plan", "calibrate", "--batch-sizes", "1,4,16,32"])
        assert res.exit_code == 0, res.output
        return plan_file(SMALL, data / "small.json")
