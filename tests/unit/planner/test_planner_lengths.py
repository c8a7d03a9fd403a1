"""Length distributions (N, MIN-MAX, lognormal, a lengths file) and finite offline batches."""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from sovllm.planner.catalog import get_engine, get_hardware, get_model
from sovllm.planner.predict import Scenario, predict
from sovllm.planner.simulator import simulate
from sovllm.planner.workload import Lengths, Load, read_lengths_file

from .test_planner_cli import _json, _run
from .test_planner_cli_review import _usage_error
from .test_planner_simulator import BIG, FixedStep

# The issue's command: a 70B model in FP8 fits one H100, so 8 GPUs are 8 replicas.
ISSUE = ["predict", "--model", "llama-2-70b", "--gpu", "h100-sxm", "--num-gpus", "8", "--tp", "1"]
ISSUE += ["--precision", "fp8", "--engine", "trtllm", "--offline"]
ISSUE_LENGTHS = ["--input-tokens", "684", "--output-tokens", "285"]


def _write(path: Path, pairs: list[tuple[int, int]]) -> Path:
    lines = (json.dumps({"input_tokens": i, "output_tokens": o}) for i, o in pairs)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _scenario(prompt: Lengths, output: Lengths, requests: int | None, gpus: int = 1) -> Scenario:
    return Scenario(
        model=get_model("llama-2-70b"),
        hw=get_hardware("h100-sxm"),
        engine=get_engine("trtllm"),
        precision="fp8",
        tp=1,
        pp=1,
        num_gpus=gpus,
        prompt=prompt,
        output=output,
        load=Load("offline"),
        requests=requests,
    )


# -- a finite offline batch ----------------------------------------------------------------


@pytest.mark.parametrize("requests", ["64", "256"])
def test_the_issues_offline_batch_reports_a_positive_throughput(requests: str) -> None:
    doc = _json(*ISSUE, *ISSUE_LENGTHS, "--requests", requests)
    assert doc["fits"] is True
    # Output tokens over the makespan: each replica's share of the batch, all 285 tokens long.
    span = doc["simulation"]["simulated_seconds"]
    assert doc["output_tokens_per_s"] == pytest.approx(int(requests) * 285 / span, rel=0.01)
    assert doc["requests_per_s"] == pytest.approx(int(requests) / span, rel=0.01)


@pytest.mark.parametrize("requests", [1, 3, 8, 9, 15])
def test_small_batches_split_over_many_replicas_count_every_token(requests: int) -> None:
    fixed = Lengths(684, 684), Lengths(285, 285)
    split = predict(_scenario(*fixed, requests, gpus=8))
    assert split.sim is not None
    # The slowest replica carries ceil(requests / 8) of them and sets the makespan.
    assert split.sim.measured == -(-requests // 8)
    expected = requests * 285 / split.sim.sim_seconds
    assert split.output_tokens_per_s == pytest.approx(expected, rel=1e-9)
    assert split.requests_per_s == pytest.approx(requests / split.sim.sim_seconds, rel=1e-9)
    # Never more than the replicas' number times what one replica does alone with its share.
    alone = predict(_scenario(*fixed, -(-requests // 8), gpus=1))
    assert 0 < split.output_tokens_per_s <= 8 * alone.output_tokens_per_s * (1 + 1e-9)


@pytest.mark.parametrize("requests", [1, 3, 20])
def test_small_batches_of_random_lengths_over_many_replicas_count_every_request(
    requests: int,
) -> None:
    out = Lengths.parse("lognormal:150,500")
    split = predict(_scenario(Lengths(300, 700), out, requests, gpus=8))
    assert split.sim is not None
    assert split.sim.measured == -(-requests // 8)
    assert split.requests_per_s == pytest.approx(requests / split.sim.sim_seconds, rel=1e-9)
    assert split.output_tokens_per_s > 0
    # Reproducible: the same seed deals the same lengths to the same replicas.
    again = predict(_scenario(Lengths(300, 700), out, requests, gpus=8))
    assert again.output_tokens_per_s == split.output_tokens_per_s


def test_an_offline_batch_is_timed_to_its_last_answer() -> None:
    # Two short answers and one of 1,000 tokens: one step each at 10 ms, once the prompts are in.
    lengths = [(100, 10), (100, 10), (100, 1000)]
    prompt, output = (
        Lengths.from_values([p for p, _ in lengths]),
        Lengths.from_values([o for _, o in lengths]),
    )
    # TensorRT-LLM's per-request overhead: the batch reaches the engine 5 ms after t = 0 (the
    # issue's zero came from such a delay: the queue had drained before any token).
    cfg = dataclasses.replace(BIG, request_overhead_s=0.005)
    res = simulate(FixedStep(0.01), cfg, Load("offline"), prompt, output, requests=3)
    assert res.output_tokens == 1020
    # One prefill step for the three 100-token prompts, then 999 decode steps.
    assert res.sim_seconds == pytest.approx(0.005 + 0.01 * 1000)
    assert res.output_tokens_per_s == pytest.approx(1020 / res.sim_seconds)
    assert res.requests_per_s == pytest.approx(3 / res.sim_seconds)


def test_an_answer_of_zero_tokens_is_a_request_with_no_output() -> None:
    prompt, output = Lengths.from_values([100, 100]), Lengths.from_values([0, 10])
    res = simulate(FixedStep(0.01), BIG, Load("offline"), prompt, output, requests=2)
    assert res.completed == 2 and res.measured == 2
    assert res.output_tokens == 10
    assert res.requests_per_s == pytest.approx(2 / res.sim_seconds)
    # Only the answered request has a first token.
    assert res.ttft.mean == pytest.approx(0.01)


# -- distributions ---------------------------------------------------------------------------


def test_lognormal_lengths_have_the_median_and_p95_given() -> None:
    d = Lengths.parse("lognormal:200,900")
    assert (d.kind, d.median, d.p95, d.lo) == ("lognormal", 200, 900, 1)
    rng = random.Random(7)
    draws = sorted(d.sample(rng, k) for k in range(40_000))
    assert statistics.median(draws) == pytest.approx(200, rel=0.03)
    assert draws[int(0.95 * len(draws))] == pytest.approx(900, rel=0.05)
    assert max(draws) == d.hi  # clipped at the 99.9th percentile, which memory is planned for
    assert statistics.mean(draws) == pytest.approx(d.mean, rel=0.03)
    assert str(d) == "lognormal:200,900"


@pytest.mark.parametrize(
    "text",
    [
        "lognormal:",
        "lognormal:200",
        "lognormal:200,100",
        "lognormal:0.5,9",
        "lognormal:a,b",
        "lognormal:200,inf",
        "lognormal:200,900,1000",
    ],
)
def test_bad_lognormal_forms_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="lognormal"):
        Lengths.parse(text)


def test_seeded_lognormal_predictions_repeat_and_depend_on_the_seed() -> None:
    base = [*ISSUE, "--num-gpus", "1", "--input-tokens", "lognormal:300,800"]
    base += ["--output-tokens", "lognormal:150,500", "--requests", "64"]
    a, b = _json(*base, "--seed", "1"), _json(*base, "--seed", "1")
    c = _json(*base, "--seed", "2")
    assert a == b
    assert a["output_tokens_per_s"] != c["output_tokens_per_s"]


def test_a_long_tailed_lengths_file_predicts_less_throughput_than_its_means(
    tmp_path: Path,
) -> None:
    # 64 chat answers: most short, one in eight long. Their means are 500 in, 222.5 out.
    rng = random.Random(3)
    pairs = [(rng.choice((300, 700)), 1500 if k % 8 == 0 else 40) for k in range(64)]
    mean_in = sum(p for p, _ in pairs) / 64
    mean_out = sum(o for _, o in pairs) / 64
    path = _write(tmp_path / "lengths.jsonl", pairs)
    one = [*ISSUE, "--num-gpus", "1"]
    tailed = _json(*one, "--lengths-from", str(path))
    means = ["--input-tokens", str(round(mean_in)), "--output-tokens", str(round(mean_out))]
    flat = _json(*one, *means, "--requests", "64")
    assert tailed["simulation"]["requests_completed"] == 64  # the file's 64 lines, in order
    assert tailed["inputs"]["output_tokens"].startswith("64 from file")
    # The batch waits for its 1,500-token answers: well below what the means promise.
    assert tailed["output_tokens_per_s"] < 0.6 * flat["output_tokens_per_s"]
    assert tailed["e2e_s"]["p99"] > 2 * flat["e2e_s"]["p99"]


def test_a_lengths_file_is_taken_in_order_and_keeps_its_pairs(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.jsonl", [(10, 0), (20, 5), (30, 7)])
    # A `sovllm bench --replay` trace's names (and its timestamps, ignored) serve too.
    bench_line = '{"timestamp": 9, "prompt_tokens": 40, "max_tokens": 1}'
    path.write_text(path.read_text() + "\n" + bench_line + "\n")
    prompt, output = read_lengths_file(path)
    assert prompt.values == (10, 20, 30, 40) and output.values == (0, 5, 7, 1)
    # Request k takes line k (cycling past the end), its prompt and output together.
    rng = random.Random()
    pairs = [(prompt.sample(rng, k), output.sample(rng, k)) for k in (0, 2, 5)]
    assert pairs == [(10, 0), (30, 7), (20, 5)]
    assert (output.lo, output.hi, output.mean) == (0, 7, 3.25)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no requests"),
        ("not json\n", "expected"),
        ('{"input_tokens": 5}\n', "expected"),
        ('{"input_tokens": 0, "output_tokens": 5}\n', "input_tokens"),
        ('{"input_tokens": 5, "output_tokens": -1}\n', "output_tokens"),
        ('{"input_tokens": 5, "output_tokens": 2.5}\n', "output_tokens"),
        ("[1, 2]\n", "expected"),
    ],
)
def test_a_bad_lengths_file_is_a_usage_error_naming_the_flag(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    res = _run(*ISSUE, "--lengths-from", str(path))
    _usage_error(res, "--lengths-from")
    # Unwrapped: rich breaks the box's lines where the temporary path's length puts them.
    assert message in " ".join(res.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--lengths-from", "/nonexistent/l.jsonl"], "--lengths-from"),
        (["--input-tokens", "5", "--lengths-from", "x.jsonl"], "--lengths-from"),
        (["--output-tokens", "5"], "--input-tokens"),
        (["--input-tokens", "5"], "--output-tokens"),
        (["--input-tokens", "lognormal:200", "--output-tokens", "5"], "--input-tokens"),
        (["--input-tokens", "5", "--output-tokens", "lognormal:9,3"], "--output-tokens"),
        # Memory is planned for the 99.9th percentile: beyond llama-2's 4,096 tokens here.
        (["--input-tokens", "lognormal:600,2000", "--output-tokens", "5"], "--input-tokens"),
    ],
)
def test_bad_length_flags_are_usage_errors_naming_the_flag(args: list[str], flag: str) -> None:
    _usage_error(_run(*ISSUE, *args), flag)


def test_size_takes_lognormal_lengths_and_a_lengths_file(tmp_path: Path) -> None:
    base = ["size", "--model", "llama-3.1-8b", "--users", "5", "--gpus", "l40s"]
    base += ["--precisions", "bf16", "--max-tp", "1"]
    doc: dict[str, Any] = _json(*base, "--prompt-tokens", "lognormal:300,900")
    assert doc["inputs"]["prompt_tokens"] == "lognormal:300,900"
    path = _write(tmp_path / "l.jsonl", [(300, 100), (500, 0), (400, 300)])
    doc = _json(*base, "--lengths-from", str(path))
    assert doc["inputs"]["prompt_tokens"].startswith("3 from file")
    assert doc["recommendation"] is not None
    _usage_error(_run(*base), "--prompt-tokens")
