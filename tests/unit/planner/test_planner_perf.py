from __future__ import annotations

import dataclasses

import pytest

from sovllm.planner.catalog import get_engine, get_hardware, get_model
from sovllm.planner.memory import weight_bytes
from sovllm.planner.perf import RateTableStepModel, RooflineStepModel, StepWork
from sovllm.planner.specs import KernelFactors

LLAMA8 = get_model("llama-3.1-8b")
H100 = get_hardware("h100-sxm")
VLLM = get_engine("vllm")


def _model(tp: int = 1, precision: str = "bf16") -> RooflineStepModel:
    return RooflineStepModel(LLAMA8, H100, VLLM, precision, tp, 1, 2.0)


def test_decode_at_batch_one_is_bound_by_reading_the_weights() -> None:
    t = _model().breakdown(StepWork(decode_seqs=1, decode_ctx=100))
    streamed = weight_bytes(LLAMA8, "bf16") / (H100.bandwidth_gbs * 1e9 * VLLM.mbu)
    assert t.memory_s == pytest.approx(streamed, rel=0.1)
    assert t.compute_s < 0.05 * t.memory_s


def test_long_prefill_is_bound_by_compute_and_scales_with_tokens() -> None:
    m = _model()
    one = m.breakdown(StepWork(prefill_tokens=4096, prefill_seqs=1, prefill_attn=4096 * 2048))
    assert one.compute_s > 3 * one.memory_s
    two = m.breakdown(StepWork(prefill_tokens=8192, prefill_seqs=2, prefill_attn=2 * 4096 * 2048))
    assert two.compute_s == pytest.approx(2 * one.compute_s, rel=0.02)


def test_tensor_parallel_splits_work_but_pays_all_reduces() -> None:
    w = StepWork(decode_seqs=8, decode_ctx=8 * 1000)
    tp1, tp4 = _model(1).breakdown(w), _model(4).breakdown(w)
    assert tp1.comm_s == 0 and tp4.comm_s > 0
    assert tp4.memory_s == pytest.approx(tp1.memory_s / 4, rel=0.01)
    assert tp4.total_s < tp1.total_s


def test_fp8_halves_decode_traffic_and_doubles_peak_on_h100() -> None:
    w = StepWork(decode_seqs=1, decode_ctx=10)
    assert _model(precision="fp8").breakdown(w).memory_s < 0.6 * _model().breakdown(w).memory_s


def test_more_context_makes_decode_slower() -> None:
    m = _model()
    assert m.step_time(StepWork(32, 32 * 8000)) > m.step_time(StepWork(32, 32 * 100))


def test_rate_table_interpolates_by_batch() -> None:
    table = RateTableStepModel(((1, 200.0, 80.0), (32, 220.0, 160.0)))
    assert table.decode_rate(1) == 80.0
    assert table.decode_rate(32) == 160.0
    assert 80.0 < table.decode_rate(16) < 160.0
    assert table.decode_rate(64) == 160.0  # flat beyond the measured range
    # 4 sequences decoding: 4 tokens at the batch-4 aggregate rate.
    assert table.step_time(StepWork(decode_seqs=4)) == pytest.approx(4 / table.decode_rate(4))
    assert table.step_time(StepWork(prefill_tokens=200, prefill_seqs=1)) == pytest.approx(1.0)


def test_pipeline_parallel_splits_weights_but_not_decode_latency() -> None:
    w = StepWork(decode_seqs=1, decode_ctx=100)
    pp1 = RooflineStepModel(LLAMA8, H100, VLLM, "bf16", 1, 1, 2.0).breakdown(w)
    pp2 = RooflineStepModel(LLAMA8, H100, VLLM, "bf16", 1, 2, 2.0).breakdown(w)
    # Stages run one after another: the same bytes are read, plus a hop between stages.
    assert pp2.memory_s == pytest.approx(pp1.memory_s, rel=0.01)
    assert pp2.comm_s > 0


def test_moe_decode_reads_only_the_routed_experts() -> None:
    mixtral = get_model("mixtral-8x7b")
    m = RooflineStepModel(mixtral, H100, VLLM, "bf16", 1, 1, 2.0)
    one = m.breakdown(StepWork(decode_seqs=1, decode_ctx=10)).memory_s
    many = m.breakdown(StepWork(decode_seqs=64, decode_ctx=640)).memory_s
    full = weight_bytes(mixtral, "bf16") / (H100.bandwidth_gbs * 1e9 * VLLM.mbu)
    assert one < 0.45 * full  # 2 of 8 experts plus attention and embeddings
    assert many == pytest.approx(full, rel=0.05)  # a big batch touches every expert


def test_a_precision_with_kernels_of_its_own_uses_their_factors() -> None:
    slow = KernelFactors(mfu=VLLM.mfu / 2, mbu=VLLM.mbu / 4)
    engine = dataclasses.replace(VLLM, by_precision={"int4": slow})
    work = StepWork(decode_seqs=1, decode_ctx=100, prefill_tokens=2048, prefill_seqs=1)
    plain = RooflineStepModel(LLAMA8, H100, VLLM, "int4", 1, 1, 2.0).breakdown(work)
    own = RooflineStepModel(LLAMA8, H100, engine, "int4", 1, 1, 2.0).breakdown(work)
    assert own.compute_s == pytest.approx(2 * plain.compute_s)
    assert own.memory_s == pytest.approx(4 * plain.memory_s)
    # Other precisions keep the engine's own factors.
    bf16 = RooflineStepModel(LLAMA8, H100, engine, "bf16", 1, 1, 2.0).breakdown(work)
    assert bf16 == _model().breakdown(work)
