"""Which batch shapes change a sequence's logits in llama.cpp's CPU kernels, bit for bit.

The evidence behind `engine.deterministic` (docs/performance.md). One context shaped as the
engine's (8 sequences with KV buffers of their own, `kv_unified=False`), the default model,
greedy. A reference: the prompt prefilled alone in one chunk, then 30 decode steps alone. Each
case below computes the same sequence another way and reports the steps whose logits differ in
any bit, and the steps whose greedy token differs:

- prompt chunks of other sizes (2 + rest, 7 + 9 + rest, rest + 3, 1 + rest, rest + 1);
- decode steps beside three other sequences with long contexts;
- the prompt in one llama_decode call with three other sequences' decode tokens, or chunks;
- a second turn over a cached first turn: reusing the answer's KV (decoded token by token),
  or the prompt's only.

    .venv/bin/python benchmarks/llamacpp_rounding.py [--threads 2]
"""

from __future__ import annotations

import argparse
import array
import ctypes
import hashlib
from typing import Any

import llama_cpp as C

from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel

Item = tuple[int, list[int], int, bool]  # slot, tokens, first position, wants logits
Trace = tuple[list[str], list[int]]  # logits digests and greedy tokens, step by step


class Probe:
    def __init__(self, threads: int) -> None:
        path = resolve_model("smollm2-135m-instruct").path
        shape = ContextShape(slots=8, context_per_slot=1024, batch_tokens=512, threads=threads)
        self.m = LlamaModel(path, shape)
        self.batch: Any = C.llama_batch_init(512, 0, 1)

    def tokens(self, text: str, special: bool = False) -> list[int]:
        return self.m.tokenize(text, add_special=False, parse_special=special)

    def step(self, items: list[Item]) -> dict[int, bytes]:
        """One llama_decode call: the logits of each item that wants them, by slot."""
        b, n, outs = self.batch, 0, {}
        for slot, toks, start, want in items:
            for j, t in enumerate(toks):
                b.token[n], b.pos[n], b.n_seq_id[n] = t, start + j, 1
                b.seq_id[n][0] = slot
                b.logits[n] = want and j == len(toks) - 1
                if b.logits[n]:
                    outs[slot] = n
                n += 1
        b.n_tokens = n
        assert C.llama_decode(self.m.ctx, b) == 0
        size = self.m.n_vocab * 4
        return {s: ctypes.string_at(C.llama_get_logits_ith(self.m.ctx, i), size) for s, i in outs.items()}  # fmt: skip

    def clear(self) -> None:
        for s in range(8):
            self.m.clear_slot(s)

    def prefill(self, toks: list[int], chunks: list[int], start: int = 0, beside: list[Item] | None = None) -> bytes:  # fmt: skip
        pos, logits = start, b""
        for i, c in enumerate(chunks):
            last = i == len(chunks) - 1
            logits = self.step([(0, toks[pos : pos + c], pos, last), *(beside or [])]).get(0, b"")
            pos += c
        return logits

    def decode(self, first: bytes, start: int, n: int = 30, others: dict[int, tuple[int, int]] | None = None) -> Trace:  # fmt: skip
        digests, toks, pos, others = [digest(first)], [greedy(first)], start, dict(others or {})
        for _ in range(n):
            items = [(0, [toks[-1]], pos, True), *((s, [t], p, True) for s, (p, t) in others.items())]  # fmt: skip
            out = self.step(items)
            others = {s: (p + 1, greedy(out[s])) for s, (p, _) in others.items()}
            digests.append(digest(out[0]))
            toks.append(greedy(out[0]))
            pos += 1
        return digests, toks


def digest(logits: bytes) -> str:
    return hashlib.sha256(logits).hexdigest()[:12]


def greedy(logits: bytes) -> int:
    a = array.array("f")
    a.frombytes(logits)
    return max(range(len(a)), key=a.__getitem__)


def report(label: str, got: Trace, ref: Trace) -> None:
    logits = [i for i, (a, b) in enumerate(zip(ref[0], got[0], strict=True)) if a != b]
    tokens = [i for i, (a, b) in enumerate(zip(ref[1], got[1], strict=True)) if a != b]
    verdict = "identical" if not logits else f"logits differ from step {logits[0]}"
    first = f", first greedy token differing at step {tokens[0]}" if tokens else ""
    print(f"{label:52s} {verdict}{first}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    p = Probe(parser.parse_args().threads)
    prompt = p.tokens(
        "<|im_start|>user\nExplain in a few sentences why hospital records are kept, and for "
        "whom.<|im_end|>\n<|im_start|>assistant\n",
        special=True,
    )
    story = [p.tokens(f"Chapter {i}. " + "The dragon flew over the castle walls. " * 20) for i in range(3)]  # fmt: skip
    n = len(prompt)
    p.clear()
    ref = p.decode(p.prefill(prompt, [n]), n)
    print(f"prompt of {n} tokens, 30 greedy decode steps; reference: one chunk, alone")
    for chunks in ([2, n - 2], [7, 9, n - 16], [n - 3, 3], [1, n - 1], [n - 1, 1]):
        p.clear()
        report(f"prompt in chunks {chunks}", p.decode(p.prefill(prompt, chunks), n), ref)

    p.clear()
    out = p.step([(i + 1, story[i][:150], 0, True) for i in range(3)])
    others = {i + 1: (150, greedy(out[i + 1])) for i in range(3)}
    report("decode beside 3 sequences of 150 tokens", p.decode(p.prefill(prompt, [n]), n, others=others), ref)  # fmt: skip
    for label, size, cut in (
        ("prompt in one call with 3 decode tokens", 1, 0),
        ("prompt in one call with 3 prompt chunks of 5", 5, 0),
        ("its second chunk in one call with 3 decode tokens", 1, 7),
        ("its last 2 tokens in one call with 3 decode tokens", 1, n - 2),
    ):
        p.clear()
        out = p.step([(i + 1, story[i][:40], 0, True) for i in range(3)])
        beside = [(i + 1, story[i][40 : 40 + size], 40, False) for i in range(3)]
        if cut:
            p.prefill(prompt, [cut])
        first = p.prefill(prompt, [n - cut], start=cut, beside=beside)
        report(label, p.decode(first, n), ref)

    p.clear()
    answer = p.decode(p.prefill(prompt, [n]), n, n=20)[1][:20]
    follow = p.tokens("<|im_end|>\n<|im_start|>user\nAnd who may read them?<|im_end|>\n<|im_start|>assistant\n", special=True)  # fmt: skip
    turn2 = prompt + answer + follow
    p.clear()
    fresh = p.decode(p.prefill(turn2, [len(turn2)]), len(turn2))
    for label, keep in (("reusing the answer's KV too", n + 20), ("reusing the prompt's KV only", n)):  # fmt: skip
        p.clear()
        first = p.prefill(prompt, [n])
        p.decode(first, n, n=20)  # the cache: the prompt, and the answer decoded token by token
        p.m.trim_slot(0, keep)
        rest = len(turn2) - keep
        report(f"turn 2 {label}", p.decode(p.prefill(turn2, [rest], start=keep), len(turn2)), fresh)  # fmt: skip


if __name__ == "__main__":
    main()
