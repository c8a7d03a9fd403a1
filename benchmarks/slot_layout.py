"""What a gap between running slots costs: raw batched decode with the same sequences in
consecutive slots or spread out.

With a KV buffer per sequence (`kv_unified` off, as the engine runs), llama.cpp's `split_equal`
puts in one ubatch only sequences whose ids follow one another, and each ubatch reads all the
weights again. This script decodes N sequences (64-token prompts, then `--steps` decode steps of
one token each, all in one llama_decode call per step) laid out in different runs of slot ids,
interleaved and repeated, and prints tok/s and the ratio to the one-run layout of the same N.
Why `SlotTable.take()` places new sequences beside running ones (docs/architecture.md).

    .venv/bin/python benchmarks/slot_layout.py [--repeat 3] [--threads 2] [--steps 48]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# sovllm first: it points llama_cpp at the engine's own build (engines/llamacpp/native.py),
# so that the limit runs the same CPU variant as sovllm.
import sovllm.engines.llamacpp  # noqa: F401

# isort: split
import llama_cpp as C

from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel

SLOTS = 32
LAYOUTS = {
    "8 in 1 run": list(range(8)),
    "8 in 2 runs": [0, 1, 2, 3, 10, 11, 12, 13],
    "8 in 4 runs": [0, 1, 5, 6, 10, 11, 15, 16],
    "8 in 8 runs": list(range(0, 32, 4)),
    "32 in 1 run": list(range(32)),
    "31 in 2 runs": [s for s in range(32) if s != 15],
    "28 in 4 runs": [s for s in range(32) if s % 8 != 7],
}
BASELINE = {"8": "8 in 1 run", "32": "32 in 1 run", "31": "32 in 1 run", "28": "32 in 1 run"}


class Bench:
    def __init__(self, threads: int) -> None:
        path = resolve_model("smollm2-135m-instruct").path
        self.model = LlamaModel(path, ContextShape(SLOTS, 1024, 512, threads))
        self.batch = C.llama_batch_init(512, 0, 1)

    def step(self, entries: list[tuple[int, int, int]]) -> None:
        """One llama_decode of (slot, token, position) entries, in slot order."""
        b = self.batch
        for n, (slot, tok, pos) in enumerate(entries):
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, 1
            b.seq_id[n][0] = slot
        b.n_tokens = len(entries)
        if C.llama_decode(self.model.ctx, b) != 0:
            raise SystemExit("llama_decode failed")

    def tok_s(self, slots: list[int], steps: int) -> float:
        for s in range(SLOTS):
            self.model.clear_slot(s)
        for s in slots:
            self.step([(s, 100 + i, i) for i in range(64)])
        start = time.perf_counter()
        for k in range(steps):
            self.step([(s, 200 + k, 64 + k) for s in slots])
        return len(slots) * steps / (time.perf_counter() - start)

    def close(self) -> None:
        C.llama_batch_free(self.batch)
        self.model.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=48)
    args = ap.parse_args()
    bench = Bench(args.threads)
    runs: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    try:
        for rep in range(args.repeat):
            for name, slots in LAYOUTS.items():
                runs[name].append(bench.tok_s(slots, args.steps))
            print(f"round {rep + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in runs.items()))
    finally:
        bench.close()
    print(f"\n{'layout':<14} {'tok/s (median)':>15} {'spread':>15} {'vs one run':>11}")
    for name, values in runs.items():
        med = statistics.median(values)
        base = statistics.median(runs[BASELINE[name.split()[0]]])
        spread = f"{min(values):.1f}-{max(values):.1f}"
        print(f"{name:<14} {med:>15.1f} {spread:>15} {med / base:>10.2f}x")


if __name__ == "__main__":
    main()
