"""What the planner knows of a GPU, a model and a serving engine: plain types, read from the
catalogs (`catalog.py`), a model file (`modelfile.py`) or the measured CPU profile
(`profile.py`). They import nothing of the planner, so those three do not import one another."""

from __future__ import annotations

from dataclasses import dataclass, field

PRECISION_BYTES: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    # Per-channel scales: negligible next to a byte per weight.
    "int8": 1.0,
    # 4-bit weights with one fp16 scale and zero per group of 128: 4.25 bits a weight, the
    # figure AWQ/GPTQ checkpoints show (~6% over 0.5 bytes).
    "int4": 0.5 * 4.25 / 4.0,
}
PRECISIONS = tuple(PRECISION_BYTES)


@dataclass(frozen=True)
class Hardware:
    name: str
    memory_gb: float
    bandwidth_gbs: float
    bf16_tflops: float
    fp8_tflops: float | None
    interconnect: str
    link_gbs: float
    link_latency_s: float
    tdp_w: float
    price_usd: float
    cloud_usd_per_hour: float
    source: str
    date: str
    aliases: tuple[str, ...] = ()
    # A measured profile (cpu-local): (batch, prefill tok/s, decode tok/s) rows. When present the
    # performance model interpolates these instead of using the roofline.
    rates: tuple[tuple[int, float, float], ...] = ()
    kind: str = "gpu"
    # Who makes it: `deploy kubernetes` requests GPUs by the vendor's device-plugin resource and
    # serves with that vendor's image, so it must know (empty: not stated, as for cpu-local).
    vendor: str = ""
    # Fraction of the engine's MBU this platform reaches (1.0 = the NVIDIA parts the engine
    # factors were fitted on).
    bandwidth_efficiency: float = 1.0
    fitted_on: str = ""

    def tflops(self, precision: str) -> float:
        """Dense peak for the GEMMs of a model stored at `precision`."""
        if precision == "fp8" and self.fp8_tflops:
            return self.fp8_tflops
        # int8 and int4 weights are dequantised into bf16 GEMMs by the common kernels (Marlin,
        # AWQ), and GPUs without FP8 run FP8 checkpoints as weight-only, so both use bf16 rates.
        return self.bf16_tflops


@dataclass(frozen=True)
class Model:
    name: str
    params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool = False
    experts: int = 1
    active_experts: int = 1
    source: str = ""
    date: str = ""
    aliases: tuple[str, ...] = ()
    # Weights of a file-backed model (GGUF) are known exactly; None means params x precision.
    file_bytes: float | None = None
    max_context: int | None = None  # tokens a sequence may hold (None: not stated)
    # The precision a file's weights are stored in (GGUF), which no flag can change.
    file_precision: str | None = None

    @property
    def embedding_params(self) -> float:
        per_matrix = float(self.vocab * self.hidden)
        return per_matrix if self.tied else 2 * per_matrix

    @property
    def expert_params(self) -> float:
        """Parameters in all routed experts' MLPs (0 for a dense model)."""
        if self.experts <= 1:
            return 0.0
        return float(3 * self.hidden * self.ffn * self.experts * self.layers)

    @property
    def active_params(self) -> float:
        """Parameters one token multiplies through (top-k experts only for MoE)."""
        if self.experts <= 1:
            return self.params
        unused = self.expert_params * (1 - self.active_experts / self.experts)
        return self.params - unused


@dataclass(frozen=True)
class KernelFactors:
    """The fraction of peak FLOPS (mfu) and of peak bandwidth (mbu) an engine's kernels reach."""

    mfu: float
    mbu: float


@dataclass(frozen=True)
class Engine:
    name: str
    mfu: float
    mbu: float
    step_overhead_s: float
    seq_overhead_s: float
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    fp8_kv_cache: bool
    nontorch_gb: float
    source: str
    # Fixed latency before a request reaches the scheduler (HTTP, tokenisation, launch); it adds
    # to TTFT and end-to-end latency, not to GPU time.
    request_overhead_s: float = 0.0
    # vLLM's get_batch_defaults: GPUs with >= 70 GiB that are not A100 get bigger budgets.
    large_gpu_max_num_seqs: int | None = None
    large_gpu_max_num_batched_tokens: int | None = None
    # Tensor-parallel costs of the engine's own making (perf.py): latency each all-reduce adds per
    # doubling of TP beyond the interconnect's (a collective library called from Python, without
    # a custom all-reduce or CUDA graphs), and the launch cost per layer per step.
    allreduce_latency_s: float = 0.0
    layer_launch_s: float = 0.0
    # Where the factors come from: the engine's release and year, shown with every prediction.
    provenance: str = ""
    fitted_on: dict[str, str] = field(default_factory=dict)
    # Kernels of their own for weights of some precisions: llama.cpp prefills F16 weights
    # through cuBLAS and its quantized types through its own MMQ kernels, which reach half the
    # FLOPS on an H200 (docs/planner.md). A precision not named here uses mfu and mbu.
    by_precision: dict[str, KernelFactors] = field(default_factory=dict)

    def factors(self, precision: str) -> KernelFactors:
        """The efficiencies of the kernels that multiply weights stored at `precision`."""
        return self.by_precision.get(precision) or KernelFactors(self.mfu, self.mbu)


LARGE_GPU_GB = 70 * 1.073741824


def scheduler_limits(engine: Engine, hw: Hardware) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) the engine picks on this hardware by default."""
    large = hw.memory_gb >= LARGE_GPU_GB and not hw.name.startswith("a100")
    seqs, tokens = engine.max_num_seqs, engine.max_num_batched_tokens
    if large and engine.large_gpu_max_num_seqs:
        seqs = engine.large_gpu_max_num_seqs
    if large and engine.large_gpu_max_num_batched_tokens:
        tokens = engine.large_gpu_max_num_batched_tokens
    return seqs, tokens
