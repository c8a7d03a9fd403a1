"""Fit the planner's `llamacpp` factors on rows that to_rows.py made, and show every row's error.

    .venv/bin/python benchmarks/llamacpp_gpu/fit_factors.py [--dataset llamacpp-h200]

Two pairs, each fitted on two rows by bisection (alternating until both settle, since a
row's time combines its compute and memory terms):
- `mfu`/`mbu` on the F16 2,048-token TTFT and batch-1 TPOT rows (cuBLAS prefill);
- the quantized kernels' pair (`by_precision`, int8 and int4 alike: llama.cpp's MMQ/MMVQ) on the
  matching Q4_0 rows. The Q8_0 rows stay held out to check that one pair fits both types.

It prints the factors to write into src/sovllm/planner/data/engines.yaml (with the row ids for
`fitted_on`) and each row's error with them; it writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable

from sovllm.planner.catalog import get_engine
from sovllm.planner.predict import predict
from sovllm.planner.specs import Engine, KernelFactors
from sovllm.planner.validation import (
    STEP_METRICS,
    Row,
    load_rows,
    metric_of,
    scenario_for,
    step_metric,
)

FITS = {  # pair: (precision of the rows, weight format in the row ids)
    "mfu/mbu": ("fp16", "f16"),
    "quantized": ("int4", "q4_0"),
}


def predicted(row: Row, engine: Engine) -> float:
    s = dataclasses.replace(scenario_for(row), engine=engine)
    if row.metric in STEP_METRICS:
        return step_metric(s, row.metric)
    return metric_of(predict(s), row.metric)


def solve(f: Callable[[float], float], target: float) -> float:
    """The factor in (0.01, 1.5) at which f, falling as the factor grows, meets target."""
    lo, hi = 0.01, 1.5
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
    return (lo + hi) / 2


def with_pair(engine: Engine, pair: str, factors: KernelFactors) -> Engine:
    if pair == "mfu/mbu":
        return dataclasses.replace(engine, mfu=factors.mfu, mbu=factors.mbu)
    return dataclasses.replace(engine, by_precision={"int8": factors, "int4": factors})


def fit(rows: dict[str, Row], engine: Engine, pair: str) -> tuple[Engine, list[str]]:
    precision, fmt = FITS[pair]
    ttft = next(r for r in rows.values() if f"-{fmt}-c1-2048in-ttft" in r.id)
    tpot = next(r for r in rows.values() if f"-{fmt}-c1-512in-tpot" in r.id)

    def at(row: Row, mfu: float, mbu: float) -> float:
        return predicted(row, with_pair(engine, pair, KernelFactors(mfu, mbu)))

    k = engine.factors(precision)
    for _ in range(8):
        mbu = solve(functools.partial(at, tpot, k.mfu), tpot.value)
        mfu = solve(lambda x, b=mbu: at(ttft, x, b), ttft.value)
        k = KernelFactors(round(mfu, 4), round(mbu, 4))
    return with_pair(engine, pair, k), [tpot.id, ttft.id]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="llamacpp-h200", help="calibration file's name (stem)")
    args = ap.parse_args()
    rows = {r.id: r for r in load_rows() if r.dataset == args.dataset and r.engine == "llamacpp"}
    if not rows:
        raise SystemExit(f"no llamacpp row in the calibration file {args.dataset!r}")
    engine = get_engine("llamacpp")
    fitted: list[str] = []
    for pair, (precision, _) in FITS.items():
        engine, ids = fit(rows, engine, pair)
        k = engine.factors(precision)
        print(f"{pair}: mfu {k.mfu}, mbu {k.mbu} (mbu on {ids[0]}, mfu on {ids[1]})")
        fitted += ids
    for row in rows.values():
        value = predicted(row, engine)
        err = 100 * (value - row.value) / row.value
        role = "fitted" if row.id in fitted else "held out"
        print(f"  {row.id:40} {row.value:10.5g} predicted {value:10.5g} {err:+6.1f}% {role}")


if __name__ == "__main__":
    main()
