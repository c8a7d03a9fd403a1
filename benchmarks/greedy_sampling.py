"""What greedy sampling costs a step: llama.cpp's greedy sampler against numpy's argmax.

sovllm's runner picks a greedy token with numpy, reading the logits in place; llama.cpp's
`llama_sampler_sample` first copies all of them into a candidate array (49,152 entries for the
default model). Both pick the first token of highest logit. This script decodes `--streams`
sequences in one batch (the raw limit's loop of `engine_throughput.py`, 2 threads) and, at each
step, times the decode, llama.cpp's greedy sampler for every sequence, and numpy's argmax for
every sequence, after setting the end-of-generation tokens to -inf as a forced-length request
does; it counts the steps where the two picked different tokens (there should be none).

    .venv/bin/python benchmarks/greedy_sampling.py [--streams 32] [--steps 100]
"""

from __future__ import annotations

import argparse
import time

# engine_throughput first: it imports sovllm's engine, which points llama_cpp at the build the
# engine runs (engines/llamacpp/native.py).
import engine_throughput as et

# isort: split
import llama_cpp as C
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    n = args.streams
    path = et.model_path()
    vocab = C.Llama(str(path), vocab_only=True, verbose=False)
    eog = et.end_tokens(vocab)
    eog_ids = np.array(eog, dtype=np.intp)
    prompts = et.build_prompts(vocab, n, 64, 7)
    ids = [vocab.tokenize(p.encode(), add_bos=False, special=False) for p in prompts]
    model = C.llama_model_load_from_file(str(path).encode(), C.llama_model_default_params())
    cp = C.llama_context_default_params()
    cp.n_seq_max, cp.n_ctx = n, n * et.CONTEXT_PER_SLOT
    cp.n_batch = cp.n_ubatch = max(et.STEP_TOKENS, n)
    cp.n_threads = cp.n_threads_batch = args.threads
    cp.kv_unified = False
    cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
    ctx = C.llama_init_from_model(model, cp)
    nv = C.llama_vocab_n_tokens(C.llama_model_get_vocab(model))
    batch = C.llama_batch_init(cp.n_batch, 0, 1)
    samplers = [C.llama_sampler_init_greedy() for _ in range(n)]
    last = []
    for s in range(n):  # each prompt prefilled alone
        for j, t in enumerate(ids[s]):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, j, 1
            batch.seq_id[j][0] = s
            batch.logits[j] = j == len(ids[s]) - 1
        batch.n_tokens = len(ids[s])
        if C.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed in prefill")
        last.append(et._sample(ctx, samplers[s], len(ids[s]) - 1, eog))
    pos = [len(p) for p in ids]
    decode_s = llama_s = numpy_s = 0.0
    differ = 0
    for _ in range(args.steps):
        for s in range(n):
            batch.token[s], batch.pos[s], batch.n_seq_id[s] = last[s], pos[s], 1
            batch.seq_id[s][0] = s
            batch.logits[s] = True
        batch.n_tokens = n
        t0 = time.perf_counter()
        if C.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed in decode")
        t1 = time.perf_counter()
        fast = []
        for s in range(n):
            row = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx, s), shape=(nv,))
            row[eog_ids] = -np.inf
            fast.append(int(row.argmax()))
        t2 = time.perf_counter()
        last = [et._sample(ctx, samplers[s], s, eog) for s in range(n)]
        t3 = time.perf_counter()
        differ += sum(a != b for a, b in zip(fast, last, strict=True))
        decode_s, numpy_s, llama_s = decode_s + t1 - t0, numpy_s + t2 - t1, llama_s + t3 - t2
        pos = [p + 1 for p in pos]
    k = args.steps
    print(
        f"{n} streams, {k} steps, {args.threads} threads: decode {decode_s / k * 1e3:.1f} ms a "
        f"step; greedy sampling, llama.cpp {llama_s / k * 1e3:.2f} ms a step "
        f"({llama_s / k / n * 1e6:.0f} us a sequence), numpy {numpy_s / k * 1e3:.2f} ms a step "
        f"({numpy_s / k / n * 1e6:.0f} us a sequence); tokens that differ: {differ}"
    )


if __name__ == "__main__":
    main()
