"""Error of the planner against published measurements (data/calibration/*.csv).

data/calibration/corrections.yaml says how rows are read where the CSV is wrong or silent about
a run's settings (precision, scheduler limits); each entry gives its evidence, none is fitted.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from sovllm.planner.catalog import (
    engine_catalog,
    get_engine,
    get_hardware,
    get_model,
    hardware_catalog,
)
from sovllm.planner.errors import PlannerError
from sovllm.planner.perf import StepWork
from sovllm.planner.predict import Prediction, Scenario, predict, step_model_for
from sovllm.planner.specs import PRECISIONS
from sovllm.planner.workload import Lengths, Load, ThinkTime

METRICS = (
    "output_tokens_per_s",
    "ttft_s_mean",
    "tpot_s_mean",
    "tpot_s_p50",
    "prefill_s",
    "decode_step_s",
)
# A prefill pass is what a first token waits for, a decode step what each later token waits for:
# the step rows (Splitwise's profile, a100.csv) count with TTFT and TPOT.
METRIC_GROUP = {
    "output_tokens_per_s": "throughput",
    "ttft_s_mean": "ttft",
    "prefill_s": "ttft",
    "tpot_s_mean": "tpot",
    "tpot_s_p50": "tpot",
    "decode_step_s": "tpot",
}
# Metrics of one engine step (one forward pass), predicted by the step model alone.
STEP_METRICS = ("prefill_s", "decode_step_s")


@dataclass(frozen=True)
class Row:
    id: str
    model: str
    gpu: str
    num_gpus: int
    tp: int
    precision: str
    engine: str
    input_tokens: int
    output_tokens: int
    load: str
    metric: str
    value: float
    source: str
    dataset: str = ""  # the calibration file's stem: "published", "a100"


@dataclass(frozen=True)
class Correction:
    """How the listed rows are read: settings of the published runs the CSV gets wrong or lacks."""

    rows: tuple[str, ...]
    why: str
    precision: str | None = None
    max_num_seqs: int | None = None

    def describe(self) -> str:
        parts = []
        if self.precision is not None:
            parts.append(self.precision)
        if self.max_num_seqs is not None:
            parts.append(f"max_num_seqs {self.max_num_seqs}")
        return ", ".join(parts)


@dataclass(frozen=True)
class RowError:
    row: Row
    predicted: float
    fitted: bool
    read_as: str = ""  # the corrections applied to the row ("" = read as labelled)

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted - self.row.value) / self.row.value

    @property
    def ratio(self) -> float:
        return self.predicted / self.row.value


def calibration_files() -> list[Path]:
    folder = resources.files("sovllm.planner").joinpath("data", "calibration")
    return sorted(Path(str(p)) for p in folder.iterdir() if str(p).endswith(".csv"))


def load_rows(paths: list[Path] | None = None) -> list[Row]:
    rows: list[Row] = []
    for path in paths or calibration_files():
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                rows.append(
                    Row(
                        id=rec["id"],
                        model=rec["model"],
                        gpu=rec["gpu"],
                        num_gpus=int(rec["num_gpus"]),
                        tp=int(rec["tp"]),
                        precision=rec["precision"],
                        engine=rec["engine"],
                        input_tokens=int(rec["input_tokens"]),
                        output_tokens=int(rec["output_tokens"]),
                        load=rec["load"],
                        metric=rec["metric"],
                        value=float(rec["value"]),
                        source=rec["source"],
                        dataset=path.stem,
                    )
                )
    return rows


@cache
def load_corrections() -> tuple[Correction, ...]:
    text = (
        resources.files("sovllm.planner")
        .joinpath("data", "calibration", "corrections.yaml")
        .read_text(encoding="utf-8")
    )
    out: list[Correction] = []
    for rec in yaml.safe_load(text) or []:
        corr = Correction(
            rows=tuple(rec["rows"]),
            why=str(rec["why"]).strip(),
            precision=rec.get("precision"),
            max_num_seqs=rec.get("max_num_seqs"),
        )
        if not corr.why or not corr.describe():
            raise PlannerError(f"correction for {corr.rows} needs a setting and a 'why'")
        if corr.precision is not None and corr.precision not in PRECISIONS:
            raise PlannerError(f"correction for {corr.rows}: unknown precision {corr.precision}")
        out.append(corr)
    return tuple(out)


def corrections_for(row_id: str) -> list[Correction]:
    return [c for c in load_corrections() if row_id in c.rows]


def parse_load(text: str) -> Load:
    """`offline`, `offline:N` (a batch of N requests), `concurrency:C`, `rate:R`, `users:U/S`;
    `static_batch:N` (N sequences of fixed lengths started together, run to the end) is read as
    `offline:N`."""
    kind, _, value = text.partition(":")
    if kind in ("offline", "static_batch"):
        if (value or kind == "static_batch") and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"load '{text}': {kind}:N needs a whole number of requests >= 1")
        return Load("offline", float(value or 0))
    if kind == "concurrency":
        return Load("concurrency", float(value))
    if kind == "rate":
        return Load("rate", float(value))
    if kind == "users":
        users, _, think = value.partition("/")
        return Load("users", float(users), ThinkTime.exponential(float(think or 0)))
    raise ValueError(f"unknown load '{text}'")


def fitted_row_ids() -> set[str]:
    ids: set[str] = set()
    for engine in engine_catalog().values():
        ids.update(engine.fitted_on.values())
    ids.update(hw.fitted_on for hw in hardware_catalog().values() if hw.fitted_on)
    return ids


def scenario_for(row: Row, seed: int = 0, corrected: bool = True) -> Scenario:
    load = parse_load(row.load)
    requests = None
    if load.kind == "concurrency" and load.value <= 1:
        requests = 8  # one sequence at a time: a few requests give the steady value
    if load.kind == "offline" and load.value:
        requests = int(load.value)  # one batch, as llama-batched-bench runs it
    scenario = Scenario(
        model=get_model(row.model),
        hw=get_hardware(row.gpu),
        engine=get_engine(row.engine),
        precision=row.precision,
        tp=row.tp,
        pp=1,
        num_gpus=row.num_gpus,
        prompt=Lengths(row.input_tokens, row.input_tokens),
        output=Lengths(row.output_tokens, row.output_tokens),
        load=load,
        requests=requests,
        seed=seed,
    )
    if not corrected:
        return scenario
    for corr in corrections_for(row.id):
        if corr.precision is not None:
            scenario = dataclasses.replace(scenario, precision=corr.precision)
        if corr.max_num_seqs is not None:
            scenario = dataclasses.replace(scenario, max_num_seqs=corr.max_num_seqs)
    return scenario


def metric_of(pred: Prediction, metric: str) -> float:
    sim = pred.sim
    if sim is None:
        return float("nan")
    if metric == "output_tokens_per_s":
        return pred.output_tokens_per_s
    if metric == "ttft_s_mean":
        return sim.ttft.mean
    if metric == "tpot_s_mean":
        return sim.tpot.mean
    if metric == "tpot_s_p50":
        return sim.tpot.p50
    raise ValueError(f"unknown metric '{metric}'")


def step_metric(s: Scenario, metric: str) -> float:
    """One forward pass of the row's batch: `prefill_s` over every prompt at once (Splitwise's
    prompt_time), `decode_step_s` one decode iteration with each prompt as context."""
    b = int(s.load.value) or 1
    n = s.prompt.hi
    if metric == "prefill_s":
        work = StepWork(prefill_tokens=b * n, prefill_seqs=b, prefill_attn=b * n * n / 2)
    elif metric == "decode_step_s":
        work = StepWork(decode_seqs=b, decode_ctx=float(b * n))
    else:
        raise ValueError(f"unknown step metric '{metric}'")
    return step_model_for(s).step_time(work)


def evaluate(rows: list[Row] | None = None, corrected: bool = True) -> list[RowError]:
    """Error per row; `corrected=False` reads every row exactly as the CSV labels it."""
    rows = load_rows() if rows is None else rows
    fitted = fitted_row_ids()
    memo: dict[tuple[str, ...], Prediction] = {}
    out: list[RowError] = []
    for row in rows:
        s = scenario_for(row, corrected=corrected)
        read_as = "; ".join(c.describe() for c in corrections_for(row.id)) if corrected else ""
        if row.metric in STEP_METRICS:
            out.append(RowError(row, step_metric(s, row.metric), row.id in fitted, read_as))
            continue
        key: tuple[str, ...] = (row.model, row.gpu, str(row.num_gpus), str(row.tp), s.precision)
        key += (row.engine, str(row.input_tokens), str(row.output_tokens), row.load)
        key += (str(s.max_num_seqs),)
        if key not in memo:
            memo[key] = predict(s)
        out.append(RowError(row, metric_of(memo[key], row.metric), row.id in fitted, read_as))
    return out


@dataclass(frozen=True)
class Summary:
    group: str
    subset: str  # "held-out", "fitted" or "all"
    rows: int
    median_abs_pct: float
    max_abs_pct: float
    worst_ratio: float  # max(pred/meas, meas/pred)
    dataset: str = "all"  # every row, or one calibration file's ("published", "a100")


def summarise(errors: list[RowError]) -> list[Summary]:
    """Per metric group, fitted and held-out apart: over every row, then per calibration file
    when there is more than one."""
    datasets = sorted({e.row.dataset for e in errors})
    out: list[Summary] = []
    for dataset in ["all"] + (datasets if len(datasets) > 1 else []):
        for group in ("throughput", "tpot", "ttft"):
            for subset in ("held-out", "fitted", "all"):
                sel = [
                    e
                    for e in errors
                    if METRIC_GROUP[e.row.metric] == group
                    and (dataset == "all" or e.row.dataset == dataset)
                    and (subset == "all" or e.fitted == (subset == "fitted"))
                ]
                if not sel:
                    continue
                abs_pct = [abs(e.error_pct) for e in sel]
                worst = max(max(e.ratio, 1 / e.ratio) for e in sel)
                med = statistics.median(abs_pct)
                out.append(Summary(group, subset, len(sel), med, max(abs_pct), worst, dataset))
    return out


def engine_errors(engine: str) -> list[RowError]:
    """The error on each row measured with this engine profile ([] if none): how far a plan
    made with it can be trusted (summarise() gives the fitted and held-out medians)."""
    return evaluate([r for r in load_rows() if r.engine == engine])
