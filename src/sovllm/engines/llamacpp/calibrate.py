"""Measure this machine's prefill and decode rates with the engine's own runner.

`sovllm plan calibrate` turns these into the `cpu-local` hardware profile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass

from sovllm.engines.base import SamplingParams
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
from sovllm.engines.llamacpp.runner import Runner
from sovllm.engines.llamacpp.scheduler import StepItem
from sovllm.engines.llamacpp.sequence import Sequence, Status
from sovllm.engines.llamacpp.settings import EngineSettings


@dataclass(frozen=True)
class RateSample:
    batch: int
    """Sequences in the step."""
    prefill_tokens_per_s: float
    """Aggregate prompt tokens/s with `batch` prompts prefilled together."""
    decode_tokens_per_s: float
    """Aggregate generated tokens/s with `batch` sequences decoding together."""


def measure_rates(
    model: str,
    batch_sizes: Collection[int],
    prompt_tokens: int = 256,
    decode_steps: int = 32,
    threads: int | None = None,
) -> list[RateSample]:
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("batch sizes must be positive")
    slots = max(batch_sizes)
    shape = ContextShape(
        slots=slots,
        context_per_slot=prompt_tokens + decode_steps + 16,
        batch_tokens=max(512, slots),
        threads=threads or os.cpu_count() or 1,
        flash_attn=EngineSettings().flash_attn,  # the engine's arithmetic, not the shape's default
    )
    llm = LlamaModel(resolve_model(model).path, shape)
    runner = Runner(llm)
    try:
        # Warm the caches and threads once so the first batch size is not penalised.
        _measure(llm, runner, 1, min(prompt_tokens, 32), 2)
        return [_measure(llm, runner, b, prompt_tokens, decode_steps) for b in batch_sizes]
    finally:
        runner.close()
        llm.close()


def _measure(llm: LlamaModel, runner: Runner, batch: int, prompt: int, steps: int) -> RateSample:
    greedy = SamplingParams(temperature=0.0, ignore_eos=True)
    seqs = []
    for slot in range(batch):
        # Distinct prompts: no sequence can borrow another's work.
        tokens = [(slot * 7919 + i * 31) % 5000 + 100 for i in range(prompt)]
        seq = Sequence(f"cal-{slot}", tokens, greedy, steps + 1)
        seq.slot = slot
        seqs.append(seq)
    start = time.perf_counter()
    pending = [StepItem(s, s.prompt, 0, True) for s in seqs]
    to_sample = []
    while pending:
        step, budget = [], runner.capacity
        while pending and budget > 0:
            item = pending.pop(0)
            take = item.tokens[:budget]
            rest = item.tokens[budget:]
            step.append(StepItem(item.seq, take, item.start_pos, not rest))
            if rest:
                pending.insert(0, StepItem(item.seq, rest, item.start_pos + len(take), True))
            budget -= len(take)
        to_sample += runner.decode(step)
    for seq, index in to_sample:
        seq.output.append(runner.sample(seq, index))
        seq.n_computed = seq.prompt_len
        seq.status = Status.DECODE
    prefill_s = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(steps):
        step = [StepItem(s, [s.last_token], s.n_computed, True) for s in seqs]
        for seq, index in runner.decode(step):
            seq.n_computed += 1
            seq.output.append(runner.sample(seq, index))
    decode_s = time.perf_counter() - start
    for seq in seqs:
        runner.release(seq)
        assert seq.slot is not None
        llm.clear_slot(seq.slot)
    return RateSample(batch, batch * prompt / prefill_s, batch * steps / decode_s)
