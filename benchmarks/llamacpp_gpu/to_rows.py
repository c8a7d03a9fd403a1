"""Turn run.sh's output into calibration rows (the columns of data/calibration/published.csv).

    python benchmarks/llamacpp_gpu/to_rows.py RESULTS_DIR --gpu h100-sxm --date 2026-11-26 \
        --llama-cpp "llama.cpp of llama-cpp-python 0.3.36" --header \
        > src/sovllm/planner/data/calibration/llamacpp-gpu.csv

(`--header` for a new file; without it the rows can be appended to an existing one.)

Rows, all Llama-3.1-8B's shape (random weights), one GPU, engine llamacpp:
- TTFT at concurrency 1: llama-bench's mean time to prefill 512 and 2048 tokens;
- TPOT at concurrency 1: llama-bench's mean time for 128 tokens after a 512-token prompt, / 128;
- output tokens/s of an offline batch of B requests (512 in, 128 out), from llama-batched-bench:
  B x 128 / (prefill time + decode time).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

PRECISION = {"f16": "fp16", "Q8_0": "int8", "Q4_0": "int4"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--gpu", required=True, help="planner hardware name of the GPU measured")
    ap.add_argument("--date", required=True)
    ap.add_argument("--llama-cpp", required=True, help="which llama.cpp was built, for the source")
    ap.add_argument("--header", action="store_true", help="print the CSV header first")
    args = ap.parse_args()
    gpu_name = (args.results / "gpu.csv").read_text().splitlines()[1].split(",")[0].strip()
    out = csv.writer(sys.stdout, lineterminator="\n")
    if args.header:
        out.writerow(
            [
                "id",
                "model",
                "gpu",
                "num_gpus",
                "tp",
                "precision",
                "engine",
                "input_tokens",
                "output_tokens",
                "load",
                "metric",
                "value",
                "source",
            ]
        )

    def row(
        rid: str, prec: str, inp: int, outp: int, load: str, metric: str, value: float, tool: str
    ) -> None:
        source = (
            f"measured by sovllm (benchmarks/llamacpp_gpu/run.sh, {tool}, {args.llama_cpp}) "
            f"on {gpu_name}, random-weight Llama-3.1-8B shape, {args.date}"
        )
        out.writerow(
            [
                "lcpp-8b-" + args.gpu + "-" + rid,
                "llama-3.1-8b",
                args.gpu,
                1,
                1,
                PRECISION[prec],
                "llamacpp",
                inp,
                outp,
                load,
                metric,
                f"{value:.5g}",
                source,
            ]
        )

    for quant in PRECISION:
        path = args.results / f"bench-{quant}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            # Mean time per test (the mean of the times, not the inverse of the mean rate).
            seconds = float(rec["avg_ns"]) / 1e9
            if rec["n_gen"] == 0:
                n = int(rec["n_prompt"])
                row(
                    f"{quant.lower()}-c1-{n}in-ttft",
                    quant,
                    n,
                    128,
                    "concurrency:1",
                    "ttft_s_mean",
                    seconds,
                    "llama-bench",
                )
            else:
                depth = int(rec.get("n_depth", 0))
                row(
                    f"{quant.lower()}-c1-{depth}in-tpot",
                    quant,
                    depth,
                    int(rec["n_gen"]),
                    "concurrency:1",
                    "tpot_s_mean",
                    seconds / int(rec["n_gen"]),
                    "llama-bench",
                )
    for quant in PRECISION:
        path = args.results / f"batched-{quant}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            pl, pp, tg = int(rec["pl"]), int(rec["pp"]), int(rec["tg"])
            value = pl * tg / float(rec["t"])
            row(
                f"{quant.lower()}-offline{pl}-thr",
                quant,
                pp,
                tg,
                f"offline:{pl}",
                "output_tokens_per_s",
                value,
                "llama-batched-bench",
            )


if __name__ == "__main__":
    main()
