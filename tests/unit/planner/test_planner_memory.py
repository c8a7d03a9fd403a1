from __future__ import annotations

import pytest

from sovllm.planner.catalog import get_engine, get_hardware, get_model
from sovllm.planner.memory import GB, kv_bytes_per_token, plan_memory, weight_bytes

LLAMA = get_model("llama-3.3-70b")
VLLM = get_engine("vllm")


def test_article_weights_are_about_140_gb_in_fp16() -> None:
    assert 135 <= weight_bytes(LLAMA, "fp16") / GB <= 145


@pytest.mark.parametrize("prompt", [300, 500])
def test_article_total_is_160_to_180_gb_for_100_users(prompt: int) -> None:
    # One copy of the model with all 100 users' prompts and 200-token answers resident.
    m = plan_memory(
        LLAMA,
        get_hardware("h100-sxm"),
        VLLM,
        "fp16",
        1,
        1,
        sequences=100,
        context_tokens=prompt + 200,
    )
    total = m.weights_gb + m.kv_gb + m.activations_gb + m.overhead_gb
    assert 160 <= total <= 180
    # The article's "20-40 GB" for KV cache, activations and overhead (a loose range: 300-token
    # prompts land just under it).
    assert 15 <= total - m.weights_gb <= 40


@pytest.mark.parametrize("gpu", ["a100-80gb-sxm", "h100-sxm"])
def test_article_does_not_fit_on_one_80gb_gpu(gpu: str) -> None:
    m = plan_memory(LLAMA, get_hardware(gpu), VLLM, "fp16", 1, 1, 100, 700)
    assert not m.fits
    assert "weights need 141" in m.reason and "usable" in m.reason


def test_article_fits_at_tp8_on_a100_80gb() -> None:
    m = plan_memory(LLAMA, get_hardware("a100-80gb-sxm"), VLLM, "fp16", 8, 1, 100, 700)
    assert m.fits and m.fits_all_sequences
    assert m.weights_gb == pytest.approx(weight_bytes(LLAMA, "fp16") / 8 / GB)
    assert m.max_concurrent_sequences >= 100


def test_vllm_rule_usable_kv_is_utilisation_times_total_minus_peak() -> None:
    hw = get_hardware("h100-sxm")
    m = plan_memory(LLAMA, hw, VLLM, "fp8", 2, 1, 1, 1000)
    static = m.weights_gb + m.activations_gb + m.overhead_gb
    assert m.kv_free_gb == pytest.approx(0.9 * hw.memory_gb - static)
    block = 16 * m.kv_bytes_per_token_per_gpu
    assert m.kv_blocks == int(m.kv_free_gb * GB // block)
    assert m.max_concurrent_sequences == m.kv_blocks // (1000 // 16 + 1)


def test_kv_heads_are_replicated_when_tp_exceeds_them() -> None:
    # 8 KV heads: TP=8 holds one per rank; TP=16 still holds one per rank (replicated).
    assert kv_bytes_per_token(LLAMA, 2, tp=16) == kv_bytes_per_token(LLAMA, 2, tp=8)
    assert kv_bytes_per_token(LLAMA, 2, tp=4) == 2 * kv_bytes_per_token(LLAMA, 2, tp=8)


def test_quantised_weights_shrink_but_keep_scale_overhead() -> None:
    bf16 = weight_bytes(LLAMA, "bf16")
    int4 = weight_bytes(LLAMA, "int4")
    assert 0.25 * bf16 < int4 < 0.35 * bf16
    assert weight_bytes(LLAMA, "fp8") < 0.55 * bf16


def test_kv_that_does_not_fit_all_sequences_says_how_much_is_missing() -> None:
    m = plan_memory(LLAMA, get_hardware("h100-sxm"), VLLM, "bf16", 2, 1, 1000, 8000)
    assert m.fits and not m.fits_all_sequences
    assert m.reason.startswith("KV cache for 1000x8000 tokens needs")
    assert "free" in m.reason and f"{m.max_concurrent_sequences} sequences" in m.reason


def test_a_sequence_longer_than_free_kv_does_not_fit() -> None:
    m = plan_memory(
        get_model("llama-3.1-8b"), get_hardware("rtx-4090"), VLLM, "bf16", 1, 1, 1, 10**6
    )
    assert not m.fits and "KV cache for 1x1000000 tokens" in m.reason
