"""Memory model: weights, KV cache, activations and overhead per GPU, and vLLM's KV budget.

usable KV = gpu_memory_utilization x device memory - (weights + activation peak + non-torch),
as vLLM's determine_available_memory does; KV is allocated in 16-token blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sovllm.planner.specs import PRECISION_BYTES, Engine, Hardware, Model, scheduler_limits

GB = 1e9
BLOCK_TOKENS = 16
# CUDA context + NCCL buffers per rank once there is more than one rank.
NCCL_GB = 0.25


def kv_dtype_bytes(precision: str, engine: Engine, kv_precision: str = "auto") -> float:
    if kv_precision == "auto":
        # vLLM keeps the KV cache in the activation dtype unless told otherwise; TRT-LLM/NIM FP8
        # engines are built with an FP8 KV cache.
        return 1.0 if (precision == "fp8" and engine.fp8_kv_cache) else 2.0
    return PRECISION_BYTES[kv_precision]


def weight_bytes(model: Model, precision: str) -> float:
    """All weights of one copy of the model."""
    if model.file_bytes is not None:
        return model.file_bytes
    bpp = PRECISION_BYTES[precision]
    # Quantised checkpoints keep embeddings and LM head in 16-bit.
    embed = model.embedding_params
    return (model.params - embed) * bpp + embed * 2.0


def kv_heads_per_rank(model: Model, tp: int) -> int:
    # Replicated, not split, once TP exceeds the KV heads: each rank still holds one head.
    return max(1, model.kv_heads // tp)


def kv_bytes_per_token(model: Model, kv_bytes: float, tp: int = 1, pp: int = 1) -> float:
    """KV bytes one token occupies on one GPU (2 = K and V). With tp=pp=1: the whole model."""
    layers = math.ceil(model.layers / pp)
    return 2.0 * layers * kv_heads_per_rank(model, tp) * model.head_dim * kv_bytes


def activation_bytes(model: Model, engine: Engine, hw: Hardware, tp: int) -> float:
    """Peak of vLLM's profile run: one max-size prefill chunk's MLP intermediate (gate and up,
    2 bytes each) plus fp32 logits for every running sequence."""
    seqs, tokens = scheduler_limits(engine, hw)
    mlp = tokens * 2 * (model.ffn / tp) * 2
    logits = seqs * model.vocab * 4
    return float(mlp + logits)


@dataclass(frozen=True)
class MemoryPlan:
    """Per GPU unless a name says otherwise; GB are 1e9 bytes."""

    weights_gb: float
    activations_gb: float
    overhead_gb: float
    kv_gb: float  # KV needed on each GPU for `sequences` x `context_tokens`
    gpu_memory_gb: float
    usable_gb: float
    kv_free_gb: float
    kv_bytes_per_token: float  # whole model, one copy (the figure calculators quote)
    kv_bytes_per_token_per_gpu: float
    kv_blocks: int
    kv_token_capacity: int
    sequences: int
    context_tokens: int
    max_concurrent_sequences: int
    fits: bool  # the model loads and at least one sequence of context_tokens fits
    fits_all_sequences: bool
    reason: str
    gpus_per_replica: int

    @property
    def per_gpu_total_gb(self) -> float:
        kv = min(self.kv_gb, max(self.kv_free_gb, 0.0))
        return self.weights_gb + self.activations_gb + self.overhead_gb + kv

    @property
    def required_total_gb(self) -> float:
        """What one replica needs in all for every sequence resident at once."""
        static = self.weights_gb + self.activations_gb + self.overhead_gb
        return (static + self.kv_gb) * self.gpus_per_replica


def plan_memory(
    model: Model,
    hw: Hardware,
    engine: Engine,
    precision: str,
    tp: int,
    pp: int,
    sequences: int,
    context_tokens: int,
    kv_precision: str = "auto",
    gpu_memory_utilization: float | None = None,
) -> MemoryPlan:
    util = (
        engine.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization
    )
    weights = weight_bytes(model, precision) / (tp * pp)
    act = activation_bytes(model, engine, hw, tp)
    overhead = (engine.nontorch_gb + (NCCL_GB if tp * pp > 1 else 0.0)) * GB
    kvb = kv_dtype_bytes(precision, engine, kv_precision)
    per_tok_gpu = kv_bytes_per_token(model, kvb, tp, pp)
    per_tok_model = kv_bytes_per_token(model, kvb)
    mem = hw.memory_gb * GB
    usable = util * mem
    free = usable - weights - act - overhead
    block_bytes = per_tok_gpu * BLOCK_TOKENS
    blocks = max(0, int(free // block_bytes)) if free > 0 else 0
    seq_blocks = math.ceil(context_tokens / BLOCK_TOKENS)
    max_seqs = blocks // seq_blocks if seq_blocks else 0
    kv_need = sequences * seq_blocks * block_bytes
    static_gb = (weights + act + overhead) / GB
    if free <= 0:
        fits = False
        reason = (
            f"weights need {weights / GB:.1f} GB per GPU (TP={tp}, PP={pp}) plus "
            f"{(act + overhead) / GB:.1f} GB activations and overhead = {static_gb:.1f} GB; "
            f"{usable / GB:.1f} GB usable ({util:.2f} x {hw.memory_gb:.1f} GB)"
        )
    elif max_seqs < 1:
        fits = False
        reason = (
            f"KV cache for 1x{context_tokens} tokens needs {seq_blocks * block_bytes / GB:.2f} GB "
            f"per GPU, {free / GB:.2f} GB free"
        )
    else:
        fits = True
        reason = ""
    all_fit = fits and max_seqs >= sequences
    if fits and not all_fit:
        reason = (
            f"KV cache for {sequences}x{context_tokens} tokens needs {kv_need / GB:.1f} GB per GPU, "
            f"{free / GB:.1f} GB free: {max_seqs} sequences run at once, the rest queue"
        )
    return MemoryPlan(
        weights_gb=weights / GB,
        activations_gb=act / GB,
        overhead_gb=overhead / GB,
        kv_gb=kv_need / GB,
        gpu_memory_gb=hw.memory_gb,
        usable_gb=usable / GB,
        kv_free_gb=free / GB,
        kv_bytes_per_token=per_tok_model,
        kv_bytes_per_token_per_gpu=per_tok_gpu,
        kv_blocks=blocks,
        kv_token_capacity=blocks * BLOCK_TOKENS,
        sequences=sequences,
        context_tokens=context_tokens,
        max_concurrent_sequences=max_seqs,
        fits=fits,
        fits_all_sequences=all_fit,
        reason=reason,
        gpus_per_replica=tp * pp,
    )
