"""One run of raw batched decode (engine_throughput.py's limit) and which CPU back-end ran it.

Run it with and without LLAMA_CPP_LIB_PATH=.venv/lib/sovllm-llama.cpp (the variants build
`make install` makes: scripts/llamacpp/build.sh), in turn, to compare the portable AVX2 wheel
with the run-time-selected variant; it imports llama_cpp before sovllm, so without the variable
it runs the wheel. The last field names the ggml CPU library the process mapped.

    .venv/bin/python benchmarks/llamacpp_variants/limit_once.py MODEL STREAMS SEED
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[2])]
import llama_cpp as C  # noqa: E402

import engine_throughput as E  # noqa: E402
from sovllm.engines.catalog import resolve_model  # noqa: E402


def main() -> None:
    name, streams, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    C.llama_log_set(E._silent_log, ctypes.c_void_p(0))
    C.llama_backend_init()
    path = resolve_model(name).path
    vocab = C.Llama(str(path), vocab_only=True, verbose=False)
    wl = E.Workload("decode-heavy", 64, 128)
    prompts = E.build_prompts(vocab, streams, 64, seed)
    ids = [vocab.tokenize(p.encode(), add_bos=False) for p in prompts]
    r = E.run_limit(path, 2, wl, streams, ids, E.end_tokens(vocab), 600.0)
    with open("/proc/self/maps") as maps:
        libs = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in maps if "ggml-cpu" in line})
    where = os.environ.get("LLAMA_CPP_LIB_PATH", "wheel")
    print(f"{where} {name} {streams} streams {r.tok_s:.1f} tok/s decode {r.decode_tok_s} {libs}")


if __name__ == "__main__":
    main()
