"""The planner's input types validate themselves: `Scenario.check`, `SizingQuestion.check` and
`CostParams.check` name the field that is wrong (the CLI maps it to its flag)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from sovllm.planner.catalog import get_engine, get_hardware, get_model
from sovllm.planner.cost import CostParams
from sovllm.planner.errors import ScenarioError
from sovllm.planner.predict import MAX_CLIENTS, MAX_REQUESTS, Scenario
from sovllm.planner.question import SizingQuestion
from sovllm.planner.slo import SLO
from sovllm.planner.workload import Lengths, Load, ThinkTime

BASE = Scenario(
    model=get_model("llama-3.1-8b"),
    hw=get_hardware("h100-sxm"),
    engine=get_engine("vllm"),
    precision="bf16",
    tp=1,
    pp=1,
    num_gpus=1,
    prompt=Lengths(300, 500),
    output=Lengths(100, 100),
    load=Load("users", 10, ThinkTime.exponential(5.0)),
)


def test_a_sound_scenario_passes() -> None:
    BASE.check()
    replace(BASE, tp=2, num_gpus=4, output=Lengths.parse("lognormal:200,900")).check()


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"tp": 0}, "tp", "at least 1"),
        ({"tp": 2, "num_gpus": 3}, "tp", "does not divide"),
        ({"tp": 3, "num_gpus": 3}, "tp", "attention heads"),
        ({"pp": 64, "num_gpus": 64}, "pp", "exceeds the 32 layers"),
        ({"requests": 0}, "requests", "at least 1"),
        ({"max_num_seqs": 0}, "max_num_seqs", "at least 1"),
        ({"load": Load("users", 0)}, "load.value", "at least 1"),
        ({"load": Load("rate", 0.0)}, "load.value", "above 0"),
        ({"load": Load("rate", math.inf)}, "load.value", "finite"),
        ({"load": Load("users", 2, ThinkTime.exponential(-1.0))}, "load.think", "0 or more"),
        ({"kv_precision": "fp4"}, "kv_precision", "unknown KV precision"),
        ({"precision": "fp3"}, "precision", "unknown precision"),
        ({"cached_fraction": 1.0}, "cached_fraction", "below 1"),
        ({"output": Lengths(200_000, 200_000)}, "lengths", "context of 131072"),
        # Memory and time grow with these without bound: refused before anything is simulated.
        ({"load": Load("users", MAX_CLIENTS + 1)}, "load.value", "at most 100,000"),
        ({"load": Load("concurrency", 10**20)}, "load.value", "at most 100,000"),
        ({"requests": MAX_REQUESTS + 1}, "requests", "at most 1,000,000"),
    ],
)
def test_a_scenario_names_what_is_wrong(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as err:
        replace(BASE, **change).check()
    assert err.value.field == field and words in str(err.value)


def test_the_limits_themselves_are_accepted() -> None:
    replace(BASE, load=Load("users", MAX_CLIENTS), requests=MAX_REQUESTS).check()
    replace(BASE, load=Load("concurrency", MAX_CLIENTS)).check()


def test_one_measured_machine_has_no_parallelism() -> None:
    cpu = replace(get_hardware("h100-sxm"), name="cpu-local", kind="cpu")
    with pytest.raises(ScenarioError, match="one measured machine: TP must be 1") as err:
        replace(BASE, hw=cpu, tp=2, num_gpus=2).check()
    assert err.value.field == "tp"


QUESTION = SizingQuestion(
    model=BASE.model,
    engine=BASE.engine,
    gpus=(BASE.hw,),
    precisions=("bf16",),
    users=100,
    prompt=BASE.prompt,
    output=BASE.output,
    think_time_s=30.0,
    slo=SLO.p95(1.0, 0.1),
    cost=CostParams(),
)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"users": 0}, "users", "at least 1"),
        ({"users": MAX_CLIENTS + 1}, "users", "at most 100,000 users"),
        ({"think_time_s": -1.0}, "think_time_s", "0 or more"),
        ({"slo": SLO.p95(0.0, 0.1)}, "slo.ttft", "above 0"),
        ({"slo": SLO.p95(1.0, math.nan)}, "slo.tpot", "finite"),
        ({"max_tp": 0}, "max_tp", "at least 1"),
        ({"rank_by": "speed"}, "rank_by", "onprem or cloud"),
        ({"precisions": ()}, "precisions", "at least one"),
        ({"gpus": ()}, "gpus", "at least one GPU"),
        ({"cost": CostParams(pue=0.9)}, "pue", "at least 1"),
        ({"cost": CostParams(years=0)}, "years", "above 0"),
        ({"cost": CostParams(gpu_price=-1.0)}, "gpu_price", "0 or more"),
        ({"cost": CostParams(currency=" ")}, "currency", "currency label"),
    ],
)
def test_a_sizing_question_names_what_is_wrong(
    change: dict[str, Any], field: str, words: str
) -> None:
    QUESTION.check()
    with pytest.raises(ScenarioError) as err:
        replace(QUESTION, **change).check()
    assert err.value.field == field and words in str(err.value)


def test_a_sizing_question_for_the_most_users_passes() -> None:
    replace(QUESTION, users=MAX_CLIENTS).check()
