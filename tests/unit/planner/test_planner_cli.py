from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sovllm.cli.main import app

runner = CliRunner()
ARTICLE = ["--model", "llama-3.3-70b", "--input-tokens", "300-500", "--output-tokens", "200"]


def _run(*args: str) -> Any:
    return runner.invoke(app, ["plan", *args])


def _json(*args: str) -> dict[str, Any]:
    res = _run(*args, "--json")
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_predict_json_has_the_documented_fields() -> None:
    doc = _json(
        "predict",
        *ARTICLE,
        "--gpu",
        "a100-80gb-sxm",
        "--num-gpus",
        "8",
        "--tp",
        "8",
        "--precision",
        "fp16",
        "--users",
        "100",
        "--think-time",
        "30",
    )
    assert doc["schema"] == "sovllm.plan.predict/v1"
    assert doc["fits"] is True
    for key in ("weights_gb", "kv_gb", "activations_gb", "overhead_gb", "per_gpu_gb"):
        assert doc["memory"][key] >= 0
    assert doc["max_concurrent_sequences"] >= 100
    assert doc["output_tokens_per_s"] > 0 and doc["requests_per_s"] > 0
    assert set(doc["ttft_s"]) == {"mean", "p50", "p95", "p99"}
    assert set(doc["tpot_s"]) == {"mean", "p50", "p95"}


def test_predict_replicas_serve_in_data_parallel() -> None:
    base = [
        "predict",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "h100-sxm",
        "--input-tokens",
        "500",
        "--output-tokens",
        "200",
        "--rate",
        "20",
    ]
    one = _json(*base, "--num-gpus", "1")
    four = _json(*base, "--num-gpus", "4")
    assert four["replicas"] == 4
    assert four["ttft_s"]["p95"] <= one["ttft_s"]["p95"]


def test_replicas_serve_no_more_than_their_users_send() -> None:
    # 5 users over 8 replicas: 5 replicas with one user each, 3 idle. Nobody thinking 10 s
    # between requests sends more than one request per 10 s.
    base = ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--input-tokens", "500"]
    base += ["--output-tokens", "200", "--think-time", "10"]
    spread = _json(*base, "--num-gpus", "8", "--users", "5")
    alone = _json(*base, "--num-gpus", "1", "--users", "1")
    assert spread["requests_per_s"] < 5 / 10
    assert spread["requests_per_s"] == pytest.approx(5 * alone["requests_per_s"], rel=0.02)
    # 10 users over 4 replicas: two carry 3, two carry 2; the latency is the busiest one's.
    uneven = _json(*base, "--num-gpus", "4", "--users", "10")
    busiest = _json(*base, "--num-gpus", "1", "--users", "3")
    light = _json(*base, "--num-gpus", "1", "--users", "2")
    expected = 2 * busiest["requests_per_s"] + 2 * light["requests_per_s"]
    assert uneven["requests_per_s"] == pytest.approx(expected, rel=0.02)
    assert uneven["ttft_s"] == busiest["ttft_s"]


@pytest.mark.parametrize("load", [["--offline"], ["--concurrency", "8"], ["--rate", "2"]])
def test_predict_accepts_every_load(load: list[str]) -> None:
    doc = _json(
        "predict",
        "--model",
        "mistral-7b",
        "--gpu",
        "l40s",
        "--input-tokens",
        "400",
        "--output-tokens",
        "100",
        *load,
    )
    assert doc["output_tokens_per_s"] > 0


def test_predict_reports_a_config_that_does_not_fit() -> None:
    doc = _json(
        "predict", *ARTICLE, "--gpu", "h100-sxm", "--precision", "fp16", "--concurrency", "100"
    )
    assert doc["fits"] is False
    assert "weights need" in doc["reason"]
    assert doc["ttft_s"] is None and doc["output_tokens_per_s"] == 0
    text = _run("predict", *ARTICLE, "--gpu", "h100-sxm", "--concurrency", "100")
    assert text.exit_code == 0 and "Does not fit" in text.output


def test_predict_readable_output() -> None:
    res = _run(
        "predict",
        *ARTICLE,
        "--gpu",
        "h100-sxm",
        "--num-gpus",
        "2",
        "--tp",
        "2",
        "--precision",
        "fp8",
        "--concurrency",
        "25",
    )
    assert res.exit_code == 0, res.output
    assert "TTFT" in res.output and "output tokens/s" in res.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["size", "--model", "llama-3.3-70b", "--users", "0", "--prompt-tokens", "300"], "--users"),
        (
            ["size", "--model", "llama-3.3-70b", "--users", "-5", "--prompt-tokens", "300"],
            "--users",
        ),
        (
            ["size", "--model", "llama-3.3-70b", "--users", "10", "--prompt-tokens", "500-300"],
            "--prompt-tokens",
        ),
        (
            ["predict", *ARTICLE, "--gpu", "h100", "--num-gpus", "8", "--tp", "3", "--offline"],
            "--tp",
        ),
        (
            ["predict", *ARTICLE, "--gpu", "h100", "--num-gpus", "3", "--tp", "3", "--offline"],
            "--tp",
        ),
        (["predict", *ARTICLE, "--gpu", "h100", "--users", "0"], "--users"),
        (["predict", *ARTICLE, "--gpu", "h100"], "--offline"),
        (["predict", *ARTICLE, "--gpu", "h100", "--offline", "--rate", "1"], "--offline"),
        (["predict", *ARTICLE, "--gpu", "h100", "--precision", "fp4", "--offline"], "--precision"),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_flag(args: list[str], flag: str) -> None:
    res = _run(*args)
    assert res.exit_code == 2
    assert flag in res.output
    assert "Traceback" not in res.output


# Before the limit these ran on: an unreachable SLO (size) or 10 requests (predict) kept them
# short, the huge ones grew memory without bound.
SMALL_SIZE = ["size", "--model", "llama-3.1-8b", "--prompt-tokens", "300", "--gpus", "h100"]
SMALL_SIZE += ["--precisions", "bf16", "--max-tp", "1", "--ttft-p95", "0.0001"]


@pytest.mark.parametrize(
    ("args", "flag", "limit"),
    [
        ([*SMALL_SIZE, "--users", "100001"], "--users", "100,000"),
        ([*SMALL_SIZE, "--users", "99999999999999999999"], "--users", "100,000"),
        (
            ["predict", *ARTICLE, "--gpu", "h100", "--users", "100001", "--requests", "10"],
            "--users",
            "100,000",
        ),
        (
            ["predict", *ARTICLE, "--gpu", "h100", "--concurrency", "100001", "--requests", "10"],
            "--concurrency",
            "100,000",
        ),
        (
            ["predict", *ARTICLE, "--gpu", "h100", "--offline", "--requests", "10000000000"],
            "--requests",
            "1,000,000",
        ),
    ],
)
def test_loads_beyond_the_planners_limit_are_refused_up_front(
    args: list[str], flag: str, limit: str
) -> None:
    res = _run(*args)
    assert res.exit_code == 2, res.output
    # Rich wraps the panel: join its lines before looking for the words.
    said = " ".join(line.strip("│ ") for line in res.output.splitlines())
    assert f"'{flag}'" in said and f"at most {limit}" in said
    assert "Traceback" not in res.output


def test_unknown_model_and_gpu_list_the_closest_names() -> None:
    res = _run(
        "predict",
        "--model",
        "llama-3.3-7b",
        "--gpu",
        "h100",
        "--input-tokens",
        "10",
        "--output-tokens",
        "10",
        "--offline",
    )
    assert res.exit_code == 2 and "llama-3.3-70b" in res.output
    res = _run(
        "size",
        "--model",
        "llama-3.3-70b",
        "--users",
        "10",
        "--prompt-tokens",
        "300",
        "--gpus",
        "a100-80gb-sxn",
    )
    assert res.exit_code == 2 and "a100-80gb-sxm" in res.output and "--gpus" in res.output


def test_size_reproduces_the_article() -> None:
    doc = _json(
        "size",
        "--model",
        "llama-3.3-70b",
        "--users",
        "100",
        "--prompt-tokens",
        "300-500",
        "--output-tokens",
        "200",
        "--think-time",
        "30",
        "--ttft-p95",
        "1.0",
        "--tpot-p95",
        "0.1",
        "--gpus",
        "a100-80gb-sxm,h100-sxm",
        "--precisions",
        "fp16",
    )
    assert doc["schema"] == "sovllm.plan.size/v1"
    mm = doc["model_memory"]["fp16"]
    assert 135 <= mm["weights_gb"] <= 145 and 160 <= mm["total_gb"] <= 180
    # TP=1 on an 80 GB part never fits; the article's TP=8 on A100-80GB does.
    reasons = {(r["gpu"], r["tp"]): r["reason"] for r in doc["rejected"]}
    assert "weights need" in reasons[("a100-80gb-sxm", 1)]
    configs = [doc["recommendation"], *doc["alternatives"]]
    tp8 = [c for c in configs if c["gpu"] == "a100-80gb-sxm" and c["tp"] == 8]
    assert tp8 and tp8[0]["ttft_s"]["p95"] <= 1.0 and tp8[0]["tpot_s"]["p95"] <= 0.1
    best = doc["recommendation"]
    assert best["replicas"] * best["users_per_replica"] >= 100
    assert best["cost"]["onprem_per_month"] > 0 and best["cost"]["cloud_per_month"] > 0
    assert best["energy"]["kwh_per_million_tokens"] > 0
    costs = [c["cost"]["onprem_per_month"] for c in configs]
    assert costs == sorted(costs)


def test_size_replicates_when_one_instance_is_not_enough() -> None:
    doc = _json(
        "size",
        "--model",
        "llama-3.3-70b",
        "--users",
        "100",
        "--prompt-tokens",
        "300-500",
        "--output-tokens",
        "200",
        "--think-time",
        "0",
        "--ttft-p95",
        "0.5",
        "--tpot-p95",
        "0.05",
        "--gpus",
        "a100-80gb-sxm",
        "--precisions",
        "fp16",
    )
    configs = [doc["recommendation"], *doc["alternatives"]]
    assert any(c["replicas"] > 1 for c in configs)
    for c in configs:
        assert c["ttft_s"]["p95"] <= 0.5 and c["tpot_s"]["p95"] <= 0.05


def test_size_readable_output_has_the_sections() -> None:
    res = _run(
        "size",
        "--model",
        "llama-3.1-8b",
        "--users",
        "50",
        "--prompt-tokens",
        "300-500",
        "--gpus",
        "l40s",
    )
    assert res.exit_code == 0, res.output
    for title in ("Memory", "Chosen configuration", "Cost", "Energy"):
        assert title in res.output


@dataclass(frozen=True)
class FakeSample:
    batch: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float


def _fake_engine(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def measure_rates(
        model: str,
        batch_sizes: list[int],
        prompt_tokens: int = 256,
        decode_steps: int = 32,
        threads: int | None = None,
    ) -> list[FakeSample]:
        calls.append((model, list(batch_sizes), prompt_tokens, decode_steps, threads))
        # Shaped like the numbers measured on the dev box: ~83 tok/s alone, ~150 at 32.
        return [
            FakeSample(b, 200.0, 83.0 * (1 + 0.8 * (b - 1) / 31) if b <= 32 else 150.0)
            for b in batch_sizes
        ]

    mod = types.ModuleType("sovllm.engines.llamacpp.calibrate")
    mod.measure_rates = measure_rates  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sovllm.engines.llamacpp.calibrate", mod)
    return calls


def test_calibrate_saves_a_profile_that_predict_uses(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_engine(monkeypatch)
    res = _run("calibrate", "--batch-sizes", "1,4,16,32", "--threads", "2")
    assert res.exit_code == 0, res.output
    path = data_dir / "profiles" / "cpu-local.json"
    doc = json.loads(path.read_text())
    assert [r["batch"] for r in doc["rates"]] == [1, 4, 16, 32]
    assert calls[0][1] == [1, 4, 16, 32] and calls[0][4] == 2
    pred = _json(
        "predict",
        "--model",
        "smollm2-135m",
        "--gpu",
        "cpu-local",
        "--engine",
        "llamacpp",
        "--precision",
        "int4",
        "--input-tokens",
        "100-300",
        "--output-tokens",
        "100",
        "--users",
        "8",
        "--think-time",
        "10",
    )
    assert pred["fits"] is True
    # Decode cannot beat the measured aggregate rate at the largest batch.
    assert 0 < pred["output_tokens_per_s"] <= 150.0
    assert pred["tpot_s"]["mean"] >= 1 / 150.0


@pytest.mark.parametrize("power", ["-5", "0", "nan", "inf"])
def test_calibrate_refuses_a_power_that_is_not_positive_before_measuring(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, power: str
) -> None:
    calls = _fake_engine(monkeypatch)
    res = _run("calibrate", "--batch-sizes", "1,4", "--power-w", power)
    assert res.exit_code == 2, res.output
    assert "'--power-w'" in res.output and "positive number of watts" in res.output
    assert calls == [] and not (data_dir / "profiles" / "cpu-local.json").exists()


def test_size_on_cpu_local_answers_how_many_users(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_engine(monkeypatch)
    assert _run("calibrate").exit_code == 0
    doc = _json(
        "size",
        "--model",
        "smollm2-135m",
        "--users",
        "200",
        "--prompt-tokens",
        "100-300",
        "--output-tokens",
        "100",
        "--think-time",
        "30",
        "--ttft-p95",
        "2",
        "--tpot-p95",
        "0.25",
        "--gpus",
        "cpu-local",
        "--engine",
        "llamacpp",
        "--precisions",
        "int4",
    )
    best = doc["recommendation"]
    assert best is not None and best["gpu"] == "cpu-local"
    assert 1 <= best["users_per_replica"] <= 200


def test_predict_on_cpu_local_without_a_profile_says_to_calibrate(data_dir: Path) -> None:
    res = _run(
        "predict",
        "--model",
        "smollm2-135m",
        "--gpu",
        "cpu-local",
        "--input-tokens",
        "10",
        "--output-tokens",
        "10",
        "--offline",
    )
    assert res.exit_code == 2 and "plan calibrate" in res.output


def test_validate_prints_the_error_table() -> None:
    doc = _json("validate")
    assert len(doc["rows"]) >= 23 and doc["summary"]
    read_as = {r["id"]: r["read_as"] for r in doc["rows"]}
    assert read_as["mi300x-405b-8x-bs1-thr"] == "max_num_seqs 256"
    assert read_as["nim-70b-2xh100-c1-tpot"] == ""


def test_validate_as_labelled_ignores_the_corrections() -> None:
    corrected = {r["id"]: r for r in _json("validate")["rows"]}
    labelled = {r["id"]: r for r in _json("validate", "--as-labelled")["rows"]}
    assert all(r["read_as"] == "" for r in labelled.values())
    row = "mi300x-405b-8x-offline-thr"  # the only row the 2024 sequence limit changes
    assert labelled[row]["predicted"] != corrected[row]["predicted"]
    nim = "nim-70b-2xh100-c25-thr"
    assert labelled[nim]["predicted"] == corrected[nim]["predicted"]


def test_predict_json_top_level_keys_are_stable() -> None:
    doc = _json(
        "predict",
        "--model",
        "qwen2.5-7b",
        "--gpu",
        "l40s",
        "--input-tokens",
        "200",
        "--output-tokens",
        "50",
        "--concurrency",
        "4",
    )
    assert set(doc) == {
        "schema",
        "inputs",
        "fits",
        "fits_all_sequences",
        "reason",
        "replicas",
        "memory",
        "max_concurrent_sequences",
        "output_tokens_per_s",
        "requests_per_s",
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "simulation",
    }


def test_size_with_an_unreachable_slo_recommends_nothing_and_says_why() -> None:
    doc = _json(
        "size",
        "--model",
        "llama-3.1-8b",
        "--users",
        "10",
        "--prompt-tokens",
        "100",
        "--tpot-p95",
        "0.001",
        "--gpus",
        "l40s",
        "--precisions",
        "bf16",
    )
    assert doc["recommendation"] is None
    assert any("even 1 user misses the SLO" in r["reason"] for r in doc["rejected"])
    res = _run(
        "size",
        "--model",
        "llama-3.1-8b",
        "--users",
        "10",
        "--prompt-tokens",
        "100",
        "--tpot-p95",
        "0.001",
        "--gpus",
        "l40s",
        "--precisions",
        "bf16",
    )
    assert res.exit_code == 0 and "No configuration meets the SLO" in res.output


def test_cost_flags_change_the_currency_and_prices() -> None:
    base = [
        "size",
        "--model",
        "llama-3.1-8b",
        "--users",
        "20",
        "--prompt-tokens",
        "300",
        "--gpus",
        "l40s",
        "--precisions",
        "bf16",
    ]
    eur = _json(*base)["recommendation"]["cost"]
    chf = _json(*base, "--currency", "CHF", "--gpu-price", "1", "--cloud-price", "0.5")
    cost = chf["recommendation"]["cost"]
    assert cost["currency"] == "CHF" and cost["purchase"] < eur["purchase"]
    assert cost["cloud_per_month"] == pytest.approx(0.5 * 730 * cost["gpus"], rel=0.01)


def test_rank_by_cloud_orders_by_cloud_cost() -> None:
    doc = _json(
        "size",
        "--model",
        "llama-3.1-8b",
        "--users",
        "50",
        "--prompt-tokens",
        "300",
        "--gpus",
        "l40s,h100-sxm",
        "--rank-by",
        "cloud",
    )
    costs = [c["cost"]["cloud_per_month"] for c in [doc["recommendation"], *doc["alternatives"]]]
    assert costs == sorted(costs)
    assert (
        _run(
            "size",
            "--model",
            "llama-3.1-8b",
            "--users",
            "5",
            "--prompt-tokens",
            "300",
            "--rank-by",
            "cheapest",
        ).exit_code
        == 2
    )
