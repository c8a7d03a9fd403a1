"""Which format to serve the default model's weights in: quality and batched throughput.

The catalog serves SmolLM2-135M-Instruct's shipped Q4_1 weights in three formats (F16 and Q8_0
derived at first start, Q4_1 as shipped; engines/catalog.py). For each format this measures:

- quality on the bundled questions (tests/data/quality_questions.json):
  - passes: greedy answers (48 tokens) through sovllm's own engine, all questions in one batch,
    that contain an accepted answer;
  - log-probability: the mean log-probability per token of each question's reference answer
    (llama-cpp-python, one sequence), a finer measure than pass or fail;
- throughput: raw batched greedy decode (benchmarks/engine_throughput.py's "limit": 64-token
  prompts, forced 128 output tokens) at 1 and 32 streams, repeated and interleaved
  (Q4_1, F16, Q8_0, Q4_1, ...), median and min-max.

The rule the default follows (docs/performance.md, "The default model's format"): the most
passes, then the highest log-probability; throughput breaks a tie. tests/integration/
test_model_quality.py checks the passes part on every run of the suite.

    .venv/bin/python benchmarks/model_formats.py [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

# sovllm first: it points llama_cpp at the engine's own build (engines/llamacpp/native.py).
import sovllm.engines.llamacpp  # noqa: F401

# isort: split
import llama_cpp as C

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from tests.integration.test_model_quality import QUESTIONS, _answers, passes  # noqa: E402

import engine_throughput as E  # noqa: E402 - the "limit" of the throughput benchmark
from sovllm.engines.catalog import CATALOG, DEFAULT_MODEL, resolve_model  # noqa: E402
from sovllm.engines.llamacpp.engine import LlamaCppEngine  # noqa: E402
from sovllm.engines.llamacpp.settings import EngineSettings  # noqa: E402

FORMATS = [n for n, e in CATALOG.items() if e.filename == CATALOG[DEFAULT_MODEL].filename]


def engine_passes(name: str, path: Path) -> list[bool]:
    engine = LlamaCppEngine(resolve_model(str(path)), EngineSettings(slots=len(QUESTIONS)), name)
    engine.start()
    try:
        return passes(asyncio.run(_answers(engine)))
    finally:
        engine.shutdown()


def mean_logprob(path: Path) -> float:
    """Mean log-probability per token of the reference answers after each chat prompt."""
    llm = C.Llama(
        str(path), n_ctx=512, n_threads=os.cpu_count() or 1, verbose=False, logits_all=True
    )
    total, count = 0.0, 0
    for q in QUESTIONS:
        prompt = f"<|im_start|>user\n{q['q']}<|im_end|>\n<|im_start|>assistant\n"
        head = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        answer = llm.tokenize(q["reference"].encode(), add_bos=False, special=False)
        llm.reset()  # type: ignore[no-untyped-call]
        llm.eval(head + answer)
        for i, tok in enumerate(answer):
            row = np.asarray(llm.scores[len(head) + i - 1], dtype=np.float64)
            top = float(row.max())
            total += float(row[tok]) - top - math.log(float(np.exp(row - top).sum()))
            count += 1
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs per cell (>= 3)")
    ap.add_argument("--json", type=Path, metavar="OUT")
    args = ap.parse_args()
    if args.repeat < 3:
        ap.error("--repeat must be at least 3")
    C.llama_log_set(E._silent_log, ctypes.c_void_p(0))
    paths = {name: resolve_model(name).path for name in FORMATS}
    threads = os.cpu_count() or 1
    print(f"{threads} threads; {len(QUESTIONS)} questions; formats {FORMATS}", flush=True)

    quality: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        ok = engine_passes(name, path)
        lp = mean_logprob(path)
        quality[name] = {"passes": sum(ok), "logprob": lp, "per_question": ok}
        print(f"{name:28} passes {sum(ok):2}/{len(QUESTIONS)}  log-prob/token {lp:.4f}", flush=True)

    vocab = C.Llama(str(paths[FORMATS[-1]]), vocab_only=True, verbose=False)
    eog = E.end_tokens(vocab)
    wl = E.Workload("decode-heavy", 64, 128)
    runs: dict[tuple[str, int], list[float]] = {}
    for streams in (1, 32):
        for rep in range(args.repeat):
            prompts = E.build_prompts(vocab, streams, wl.prompt_tokens, rep)
            bos = [int(vocab.token_bos())]
            ids = [[*bos, *vocab.tokenize(p.encode(), add_bos=False)] for p in prompts]
            for name, path in paths.items():
                r = E.run_limit(path, threads, wl, streams, ids, eog, 600.0)
                runs.setdefault((name, streams), []).append(r.tok_s)
                print(
                    f"  {name:28} {streams:2} streams run {rep + 1}: {r.tok_s:6.1f} tok/s",
                    flush=True,
                )

    print(
        "\nformat                        passes  log-prob   1 stream tok/s       32 streams tok/s"
    )
    base = {s: statistics.median(runs[(DEFAULT_MODEL, s)]) for s in (1, 32)}
    for name in FORMATS:
        cells = []
        for s in (1, 32):
            xs = runs[(name, s)]
            med = statistics.median(xs)
            cells.append(f"{med:6.1f} ({min(xs):.0f}-{max(xs):.0f}) x{med / base[s]:.2f}")
        q = quality[name]
        print(
            f"{name:28} {q['passes']:3}/{len(QUESTIONS)}  {q['logprob']:8.4f}   "
            + "   ".join(cells)
        )
    if args.json:
        out = {
            "quality": quality,
            "throughput": {f"{n}@{s}": xs for (n, s), xs in runs.items()},
            "questions": [q["q"] for q in QUESTIONS],
        }
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
