from __future__ import annotations

import pytest

from sovllm.planner.catalog import (
    _kernel_factors,
    get_engine,
    get_hardware,
    get_model,
    hardware_catalog,
    model_catalog,
)
from sovllm.planner.errors import PlannerError
from sovllm.planner.memory import kv_bytes_per_token

ISSUE_GPUS = [
    "a100-40gb-sxm",
    "a100-80gb-sxm",
    "a100-80gb-pcie",
    "h100-sxm",
    "h100-pcie",
    "h200",
    "l40s",
    "rtx-4090",
    "mi300x",
]
ISSUE_MODELS = [
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.3-70b",
    "mistral-7b",
    "mixtral-8x7b",
    "qwen2.5-7b",
    "qwen2.5-72b",
    "smollm2-135m",
]


def test_every_issue_gpu_has_specs_source_and_date() -> None:
    cat = hardware_catalog()
    for name in ISSUE_GPUS:
        hw = cat[name]
        assert hw.memory_gb > 20 and hw.bandwidth_gbs > 500 and hw.bf16_tflops > 100
        assert hw.tdp_w > 0 and hw.price_usd > 0 and hw.cloud_usd_per_hour > 0
        assert hw.source and hw.date


def test_every_issue_model_has_architecture_source_and_date() -> None:
    cat = model_catalog()
    for name in ISSUE_MODELS:
        m = cat[name]
        assert m.layers > 0 and m.heads % m.kv_heads == 0 and m.head_dim > 0
        assert m.source and m.date


# KV per token in BF16, as published in planning-facts.md section 4 (KiB).
@pytest.mark.parametrize(
    ("model", "kib"),
    [("llama-3.1-8b", 128), ("llama-3.3-70b", 320), ("llama-3.1-405b", 504), ("qwen2.5-7b", 56)],
)
def test_kv_per_token_uses_kv_heads_not_hidden_size(model: str, kib: int) -> None:
    assert kv_bytes_per_token(get_model(model), 2.0) == kib * 1024


def test_mixtral_active_params_are_about_12_9b() -> None:
    m = get_model("mixtral-8x7b")
    assert 12.0e9 < m.active_params < 14.0e9


def test_aliases_and_case_resolve() -> None:
    assert get_hardware("H100").name == "h100-sxm"
    assert get_model("Meta-Llama/Llama-3.3-70B-Instruct").name == "llama-3.3-70b"


def test_unknown_names_list_the_closest() -> None:
    with pytest.raises(PlannerError, match=r"closest: .*llama-3\.3-70b"):
        get_model("llama-3.3-70")
    with pytest.raises(PlannerError, match="h100"):
        get_hardware("h10-sxm")
    with pytest.raises(PlannerError, match="vllm"):
        get_engine("vlm")


def test_gpus_without_fp8_fall_back_to_bf16_rate() -> None:
    a100 = get_hardware("a100-80gb-sxm")
    h100 = get_hardware("h100-sxm")
    assert a100.tflops("fp8") == a100.bf16_tflops
    assert h100.tflops("fp8") == pytest.approx(2 * h100.bf16_tflops, rel=0.01)


def test_every_alias_resolves_even_a_number() -> None:
    # YAML reads the `4090` alias as an integer.
    assert get_hardware("4090").name == "rtx-4090"
    for hw in hardware_catalog().values():
        for alias in hw.aliases:
            assert get_hardware(alias).name == hw.name
    for m in model_catalog().values():
        for alias in m.aliases:
            assert get_model(alias).name == m.name


def test_kernel_factors_name_a_known_precision() -> None:
    assert _kernel_factors("e", {"int4": {"mfu": 0.2, "mbu": 0.5}})["int4"].mbu == 0.5
    with pytest.raises(PlannerError, match="engine e: by_precision names 'q4_0'; known: bf16"):
        _kernel_factors("e", {"q4_0": {"mfu": 0.2, "mbu": 0.5}})
    with pytest.raises(PlannerError, match="engine e: by_precision int4 needs numbers mfu and mbu"):
        _kernel_factors("e", {"int4": {"mfu": 0.2}})
