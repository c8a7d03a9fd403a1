"""Time of one engine step (one forward pass over a continuous batch).

GPU: a roofline per step with derating factors. Compute (linear layers + attention) runs at
MFU x peak, weight and KV traffic at MBU x bandwidth; the two combine as sqrt(c^2 + m^2), between
adding them and the roofline's max (`max` under-predicts the transition region, see
docs/planner.md, "Performance"). TP adds two ring
all-reduces per layer; the engine adds a fixed cost per step and a CPU cost per sequence.
CPU profile (cpu-local): measured aggregate token rates, interpolated by batch size.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol

from sovllm.planner.memory import kv_bytes_per_token, weight_bytes
from sovllm.planner.specs import Engine, Hardware, Model

ACT_BYTES = 2.0  # activations travel in bf16 through all-reduces
COMBINE_P = 2.0


@dataclass
class StepWork:
    decode_seqs: int = 0
    decode_ctx: float = 0.0  # sum of the decoding sequences' context lengths
    prefill_tokens: int = 0
    prefill_seqs: int = 0
    prefill_attn: float = 0.0  # sum over chunks of chunk x (context before + chunk / 2)
    prefill_ctx: float = 0.0  # sum over chunks of the context before them (its KV is read)


class StepModel(Protocol):
    def step_time(self, work: StepWork) -> float: ...


@dataclass(frozen=True)
class StepBreakdown:
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        p = COMBINE_P
        busy: float = (self.compute_s**p + self.memory_s**p) ** (1.0 / p)
        return busy + self.comm_s + self.overhead_s


class RooflineStepModel:
    def __init__(
        self,
        model: Model,
        hw: Hardware,
        engine: Engine,
        precision: str,
        tp: int,
        pp: int,
        kv_bytes: float,
    ) -> None:
        self.model = model
        self.engine = engine
        self.tp = tp
        self.pp = pp
        m = model
        embed = float(m.vocab * m.hidden)
        self._lm_head_params = embed
        self._linear_params = m.active_params - m.embedding_params
        self._attn_flops_per_ctx = 4.0 * m.layers * m.heads * m.head_dim
        kernels = engine.factors(precision)
        self._flops_rate = tp * hw.tflops(precision) * 1e12 * kernels.mfu
        wbytes = weight_bytes(m, precision)
        # The input embedding is gathered row by row, never streamed whole.
        read = wbytes - (embed * 2.0 if not m.tied else 0.0)
        frac_expert = m.expert_params / m.params if m.params else 0.0
        self._dense_bytes = read * (1 - frac_expert)
        self._expert_bytes = read * frac_expert
        self._kv_tok_gpu = kv_bytes_per_token(m, kv_bytes, tp, pp)
        self._bw = hw.bandwidth_gbs * 1e9 * kernels.mbu * hw.bandwidth_efficiency
        self._link = hw.link_gbs * 1e9
        self._alpha = hw.link_latency_s

    def _expert_fraction(self, tokens: int) -> float:
        m = self.model
        if m.experts <= 1:
            return 1.0
        return float(1.0 - (1.0 - m.active_experts / m.experts) ** max(tokens, 1))

    def breakdown(self, w: StepWork) -> StepBreakdown:
        m = self.model
        tokens = w.decode_seqs + w.prefill_tokens
        logit_rows = w.decode_seqs + w.prefill_seqs
        flops = 2.0 * self._linear_params * tokens + 2.0 * self._lm_head_params * logit_rows
        flops += self._attn_flops_per_ctx * (w.decode_ctx + w.prefill_attn)
        compute = flops / self._flops_rate
        weights = self._dense_bytes + self._expert_bytes * self._expert_fraction(tokens)
        # Per GPU: a 1/(tp*pp) slice of the weights; pp stages run one after another.
        kv_tokens = w.decode_ctx + w.prefill_ctx + w.prefill_tokens
        per_gpu = weights / self.tp + kv_tokens * self._kv_tok_gpu * self.pp
        memory = per_gpu / self._bw
        comm = 0.0
        size = tokens * m.hidden * ACT_BYTES
        if self.tp > 1:
            # Two all-reduces per layer: the interconnect's latency and a ring's bandwidth term,
            # plus the engine's own collective latency, which grows with the tree's depth.
            ring = 2.0 * (self.tp - 1) / self.tp * size / self._link
            engine_alpha = self.engine.allreduce_latency_s * math.log2(self.tp)
            comm += 2 * m.layers * (self._alpha + engine_alpha + ring)
        if self.pp > 1:
            comm += (self.pp - 1) * (self._alpha + size / self._link)
        overhead = self.engine.step_overhead_s + self.engine.seq_overhead_s * (
            w.decode_seqs + w.prefill_seqs
        )
        overhead += self.engine.layer_launch_s * m.layers  # pp stages run one after another
        return StepBreakdown(compute, memory, comm, overhead)

    def step_time(self, work: StepWork) -> float:
        return self.breakdown(work).total_s


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


class RateTableStepModel:
    """Measured aggregate rates (tokens/s of the whole step) at a few batch sizes.

    A CPU running a small quantised model is compute-bound even at batch 1, so a roofline says
    little; the measured curve already contains every kernel and scheduling cost.
    """

    def __init__(self, rates: tuple[tuple[int, float, float], ...]) -> None:
        rows = sorted(rates)
        self._batch = [float(r[0]) for r in rows]
        self._prefill = [r[1] for r in rows]
        self._decode = [r[2] for r in rows]

    def decode_rate(self, batch: int) -> float:
        return _interp(self._batch, self._decode, float(batch))

    def prefill_rate(self, seqs: int) -> float:
        return _interp(self._batch, self._prefill, float(max(seqs, 1)))

    def step_time(self, work: StepWork) -> float:
        t = 0.0
        if work.decode_seqs:
            t += work.decode_seqs / self.decode_rate(work.decode_seqs)
        if work.prefill_tokens:
            t += work.prefill_tokens / self.prefill_rate(work.prefill_seqs)
        return t


def make_step_model(
    model: Model, hw: Hardware, engine: Engine, precision: str, tp: int, pp: int, kv_bytes: float
) -> StepModel:
    if hw.rates:
        return RateTableStepModel(hw.rates)
    return RooflineStepModel(model, hw, engine, precision, tp, pp, kv_bytes)
