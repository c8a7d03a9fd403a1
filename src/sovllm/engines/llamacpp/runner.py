"""Executes one step: fills a llama_batch, calls llama_decode once, samples per sequence."""

from __future__ import annotations

import secrets

import llama_cpp as C
import numpy as np

from sovllm.engines.base import SamplingParams
from sovllm.engines.llamacpp.model import LlamaModel
from sovllm.engines.llamacpp.scheduler import StepItem
from sovllm.engines.llamacpp.sequence import Sequence

_NEG_INF = float("-inf")


class DecodeError(RuntimeError):
    pass


def _slot_of(item: StepItem) -> int:
    assert item.seq.slot is not None
    return item.seq.slot


class Runner:
    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self.capacity = model.n_batch
        self._batch = C.llama_batch_init(self.capacity, 0, 1)
        self._eog = sorted(model.eog_tokens)
        self._eog_ids = np.array(self._eog, dtype=np.intp)

    def close(self) -> None:
        C.llama_batch_free(self._batch)

    def run(self, items: list[StepItem], by_length: bool) -> list[tuple[Sequence, int]]:
        """Decode a step and sample the sequences that want it: (sequence, sampled token), for
        those not cancelled meanwhile.

        `by_length`: one llama_decode call per length of item (the decode tokens, then each
        length of prompt chunk). In one call, llama.cpp cuts the batch into ubatches of equal
        tokens per sequence (of consecutive sequence ids), so a prompt chunk beside decode
        tokens is computed a token at a time, and its last token can land in a ubatch of its
        own: its logits then differ from a prefill's (benchmarks/llamacpp_rounding.py). Items of
        one length, within the step's budget, are never cut. A call's logits are gone after the
        next one: each call's outputs are sampled first.
        """
        groups: dict[int, list[StepItem]] = {}
        # In slot order: with a KV buffer per sequence, llama.cpp puts in one ubatch only
        # sequences whose ids follow one another in the batch (split_equal, `sequential`), and
        # each ubatch reads all the weights again. In arrival order, after the prefix cache has
        # shuffled the slots, 32 decode tokens took several ubatches (docs/performance.md).
        for item in sorted(items, key=_slot_of):
            groups.setdefault(len(item.tokens) if by_length else 0, []).append(item)
        sampled = []
        for _, group in sorted(groups.items()):
            for seq, index in self.decode(group):
                if not seq.cancelled:
                    sampled.append((seq, self.sample(seq, index)))
        return sampled

    def decode(self, items: list[StepItem]) -> list[tuple[Sequence, int]]:
        """Run the step; return (sequence, batch index of its logits) for those to sample."""
        batch = self._batch
        n = 0
        outputs: list[tuple[Sequence, int]] = []
        for item in items:
            slot = item.seq.slot
            assert slot is not None
            last = len(item.tokens) - 1
            for j, tok in enumerate(item.tokens):
                batch.token[n] = tok
                batch.pos[n] = item.start_pos + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot
                want = item.wants_logits and j == last
                batch.logits[n] = want
                if want:
                    outputs.append((item.seq, n))
                n += 1
        if n > self.capacity:
            raise DecodeError(f"step of {n} tokens exceeds the batch capacity {self.capacity}")
        batch.n_tokens = n
        rc = C.llama_decode(self.model.ctx, batch)
        if rc != 0:
            raise DecodeError(f"llama_decode returned {rc} for a step of {n} tokens")
        return outputs

    def sample(self, seq: Sequence, index: int) -> int:
        p = seq.sampling
        masked = p.ignore_eos or len(seq.output) < p.min_tokens
        if p.temperature <= 0.0 and not p.logit_bias and not p.penalized:
            # Greedy: the first token of highest logit, as llama.cpp's greedy sampler picks
            # it, read in place with numpy. llama_sampler_sample first copies every logit
            # into a candidate array: 86 us a sequence for this model's 49,152 tokens against
            # 27 us here, 1.9 ms of a 32-stream step (benchmarks/greedy_sampling.py).
            row = np.ctypeslib.as_array(
                C.llama_get_logits_ith(self.model.ctx, index), shape=(self.model.n_vocab,)
            )
            if masked:
                row[self._eog_ids] = _NEG_INF
            return int(row.argmax())
        if seq.sampler is None:
            seq.sampler = self._make_sampler(p)
        if masked:
            logits = C.llama_get_logits_ith(self.model.ctx, index)
            for tok in self._eog:
                logits[tok] = _NEG_INF
        return int(C.llama_sampler_sample(seq.sampler, self.model.ctx, index))

    def release(self, seq: Sequence) -> None:
        if seq.sampler is not None:
            C.llama_sampler_free(seq.sampler)
            seq.sampler = None

    def _make_sampler(self, p: SamplingParams) -> object:
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        if p.logit_bias:
            arr = (C.llama_logit_bias * len(p.logit_bias))()
            for i, (tok, bias) in enumerate(p.logit_bias):
                arr[i].token = tok  # type: ignore[assignment]
                arr[i].bias = bias
            C.llama_sampler_chain_add(
                chain, C.llama_sampler_init_logit_bias(self.model.n_vocab, len(p.logit_bias), arr)
            )
        if p.penalized:
            # Over everything this sequence generated (the sampler sees each sampled token,
            # never the prompt), as OpenAI and vLLM apply these two; 1.0: no repeat penalty.
            C.llama_sampler_chain_add(
                chain,
                C.llama_sampler_init_penalties(
                    self.model.n_vocab,
                    self.model.context_per_slot,
                    1.0,
                    p.frequency_penalty,
                    p.presence_penalty,
                ),
            )
        if p.temperature <= 0.0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
            return chain
        if p.top_k > 0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(p.top_p, 1))
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(p.temperature))
        seed = p.seed if p.seed is not None else secrets.randbits(32)
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain
