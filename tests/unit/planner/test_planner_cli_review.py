"""Bad input and edge cases of `sovllm plan` found in a review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sovllm.planner.catalog import get_hardware
from sovllm.planner.cost import CostParams, cost_report

from .gguf_files import write_gguf
from .test_planner_cli import _fake_engine, _json, _run

SMALL = ["--model", "llama-3.1-8b", "--input-tokens", "300", "--output-tokens", "50"]
SIZE = ["size", "--model", "llama-3.1-8b", "--users", "5", "--prompt-tokens", "300"]
SIZE_ONE = [*SIZE, "--gpus", "l40s", "--precisions", "bf16", "--max-tp", "1"]


def _usage_error(res: Any, flag: str) -> None:
    assert res.exit_code == 2, res.output
    assert flag in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["predict", *SMALL, "--gpu", "h100", "--offline", "--think-time", "5"], "--think-time"),
        (
            ["predict", *SMALL, "--gpu", "h100", "--concurrency", "4", "--think-time", "5"],
            "--think-time",
        ),
        (["predict", *SMALL, "--gpu", "h100", "--rate", "1", "--think-time", "5"], "--think-time"),
        ([*SIZE, "--gpus", ","], "--gpus"),
        ([*SIZE_ONE, "--pue", "0.5"], "--pue"),
        ([*SIZE_ONE, "--currency", " "], "--currency"),
        ([*SIZE_ONE, "--currency", "GBP"], "--usd-rate"),
        ([*SIZE_ONE, "--usd-rate", "0"], "--usd-rate"),
        ([*SIZE_ONE, "--cached-prompt-fraction", "1"], "--cached-prompt-fraction"),
        (
            ["predict", *SMALL, "--gpu", "h100", "--offline", "--cached-prompt-fraction", "-0.1"],
            "--cached-prompt-fraction",
        ),
    ],
)
def test_more_bad_input_is_a_usage_error_naming_the_flag(args: list[str], flag: str) -> None:
    _usage_error(_run(*args), flag)


def test_a_simulation_that_does_not_converge_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sovllm.planner.simulator.MAX_EVENTS", 5)
    _usage_error(_run("predict", *SMALL, "--gpu", "h100", "--offline"), "--requests")
    _usage_error(_run(*SIZE_ONE), "--users")


def test_repeated_gpus_and_precisions_are_searched_once() -> None:
    doc = _json(
        *SIZE, "--gpus", "rtx-4090,rtx-4090,4090", "--precisions", "bf16,bf16", "--max-tp", "1"
    )
    rows = [doc["recommendation"], *doc["alternatives"]] if doc["recommendation"] else []
    assert len(rows) + len(doc["rejected"]) == 1
    assert doc["inputs"]["precisions"] == ["bf16"]


def test_usd_costs_are_not_converted_and_other_currencies_take_the_given_rate() -> None:
    usd = _json(*SIZE_ONE, "--currency", "USD")["recommendation"]["cost"]
    l40s = get_hardware("l40s")
    assert usd["currency"] == "USD"
    assert usd["purchase"] == pytest.approx(l40s.price_usd * 1.35, abs=1)
    gbp = _json(*SIZE_ONE, "--currency", "GBP", "--usd-rate", "0.5")["recommendation"]["cost"]
    assert gbp["purchase"] == pytest.approx(l40s.price_usd * 0.5 * 1.35, abs=1)
    # Both prices given: no conversion needed, so no rate either.
    res = _run(*SIZE_ONE, "--currency", "GBP", "--gpu-price", "1", "--cloud-price", "1")
    assert res.exit_code == 0, res.output


def _calibrated(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_engine(monkeypatch)
    assert _run("calibrate").exit_code == 0


CPU = ["--input-tokens", "100", "--output-tokens", "50", "--concurrency", "2"]


def test_cpu_local_refuses_parallelism(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _calibrated(monkeypatch)
    base = ["predict", "--model", "smollm2-135m", "--gpu", "cpu-local", *CPU]
    assert _run(*base).exit_code == 0
    _usage_error(_run(*base, "--tp", "3"), "--tp")
    _usage_error(_run(*base, "--pp", "2"), "--pp")


def test_cpu_local_refuses_a_model_it_was_not_measured_with(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _calibrated(monkeypatch)
    res = _run("predict", "--model", "llama-3.1-8b", "--gpu", "cpu-local", *CPU)
    _usage_error(res, "--model")
    assert "smollm2" in res.output
    size = ["size", "--model", "llama-3.1-8b", "--users", "5", "--prompt-tokens", "100"]
    _usage_error(_run(*size, "--gpus", "cpu-local"), "--model")


def test_sizing_on_cpu_local_uses_one_box_per_replica(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_engine(monkeypatch)
    # A profile measured with a model whose heads TP could split.
    assert _run("calibrate", "--model", "mistral-7b").exit_code == 0
    doc = _json(
        "size",
        "--model",
        "mistral-7b",
        "--users",
        "3",
        "--prompt-tokens",
        "100",
        "--output-tokens",
        "20",
        "--ttft-p95",
        "30",
        "--tpot-p95",
        "5",
        "--gpus",
        "cpu-local",
        "--engine",
        "llamacpp",
        "--precisions",
        "int4",
    )
    rows = [doc["recommendation"], *doc["alternatives"]] if doc["recommendation"] else []
    assert rows or doc["rejected"]
    assert all(r["tp"] == 1 for r in [*rows, *doc["rejected"]])


def test_a_cpu_box_is_its_own_server_and_its_measured_power_is_all_it_draws(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _calibrated(monkeypatch)
    box = get_hardware("cpu-local")
    p = CostParams(pue=1.0)
    c = cost_report(box, 10, 100.0, p)
    assert c.servers == 10
    assert c.power_kw == pytest.approx(10 * box.tdp_w * p.load_power_fraction / 1000)


def test_limit_says_why_when_the_search_stopped_at_the_users_asked_for() -> None:
    best = _json(*SIZE_ONE)["recommendation"]
    assert best["users_per_replica"] == 5
    assert "not searched beyond 5 users" in best["limit"]


def test_prompt_and_output_beyond_the_context_are_a_usage_error() -> None:
    res = _run(
        "predict",
        "--model",
        "llama-2-70b",
        "--gpu",
        "h100-sxm",
        "--num-gpus",
        "4",
        "--tp",
        "4",
        "--input-tokens",
        "4000",
        "--output-tokens",
        "200",
        "--offline",
    )
    assert res.exit_code == 2
    assert "--input-tokens" in res.output and "4096" in res.output
    res = _run("size", "--model", "llama-2-70b", "--users", "10", "--prompt-tokens", "100-5000")
    assert res.exit_code == 2
    assert "--prompt-tokens" in res.output and "4096" in res.output


def test_a_gguf_file_keeps_its_own_precision(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "q8.gguf",
        {
            "general.architecture": "llama",
            "general.name": "tiny-q8",
            "general.file_type": 7,
            "llama.block_count": 2,
            "llama.embedding_length": 64,
            "llama.attention.head_count": 4,
            "llama.feed_forward_length": 128,
            "llama.vocab_size": 100,
        },
        {"token_embd.weight": [64, 100]},
    )
    base = ["predict", "--model", str(path), "--gpu", "h100-sxm", "--input-tokens", "100"]
    base += ["--output-tokens", "10", "--concurrency", "1"]
    doc = _json(*base)
    assert doc["inputs"]["precision"] == "int8"
    res = _run(*base, "--precision", "fp8")
    assert res.exit_code == 2
    assert "--precision" in res.output and "int8" in res.output
    assert _json(*base, "--precision", "int8")["inputs"]["precision"] == "int8"


def test_an_offline_batch_is_split_over_the_replicas() -> None:
    base = ["predict", *SMALL, "--gpu", "h100-sxm", "--offline", "--requests", "64"]
    one = _json(*base, "--num-gpus", "1")
    two = _json(*base, "--num-gpus", "2")
    # Each replica gets 32 of the 64 requests, so it finishes sooner than one with all 64.
    assert two["e2e_s"]["p95"] < one["e2e_s"]["p95"]
    assert two["simulation"]["requests_completed"] == 32


def test_size_takes_the_prefix_cache_share_into_account() -> None:
    base = ["size", "--model", "llama-3.1-8b", "--users", "400", "--prompt-tokens", "4000"]
    base += ["--output-tokens", "100", "--think-time", "5", "--gpus", "l40s"]
    base += ["--precisions", "bf16", "--max-tp", "1", "--ttft-p95", "0.5"]
    cold = _json(*base)
    warm = _json(*base, "--cached-prompt-fraction", "0.9")
    assert warm["inputs"]["cached_prompt_fraction"] == 0.9
    per_cold = cold["recommendation"]["users_per_replica"] if cold["recommendation"] else 0
    assert warm["recommendation"]["users_per_replica"] > per_cold
