"""`sovllm bench` end to end against the stub: usage errors, outputs, modes, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sovllm.cli.main import app
from tests.unit.bench.stub import Stub

runner = CliRunner()
FAST = [
    "--prompt-tokens",
    "20-30",
    "--output-tokens",
    "4",
    "--warmup",
    "0",
    "--grace",
    "5",
    "--seed",
    "7",
]


def bench(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["bench", *args])
    return result.exit_code, result.output


def bench_json(stub: Stub, *args: str) -> dict[str, Any]:
    code, out = bench("--url", stub.base_url, *FAST, "--json", *args)
    assert code == 0, out
    doc: dict[str, Any] = json.loads(out[out.index("{") :])
    return doc


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["--users", "0"], "--users", "at least 1"),
        (["--concurrency", "0"], "--concurrency", "at least 1"),
        (["--prompt-tokens", "500-300"], "--prompt-tokens", "minimum 500 is above the maximum 300"),
        (["--output-tokens", "0"], "--output-tokens", "at least 1"),
        (["--output-tokens", "lognormal:50,20"], "--output-tokens", "P95 must be above"),
        (["--prompt-tokens", "lognormal:abc"], "--prompt-tokens", "lognormal:MEDIAN,P95"),
        (["--users", "2", "--rate", "3"], "--users/--rate", "give one load"),
        (["--rate", "-1"], "--rate", "above 0"),
        (["--think-time", "9-1"], "--think-time", "above the maximum"),
        (["--slo", "ttft_p95=abc"], "--slo", "not a number"),
        (["--capacity"], "--slo", "needs an SLO"),
        (["--duration", "0"], "--duration", "above 0"),
        (["--levels", "1,2"], "--levels", "only applies with --sweep"),
        (["--replay", "/nonexistent.jsonl"], "--replay", "cannot read"),
    ],
)
def test_nonsense_is_a_usage_error_naming_the_flag(args: list[str], flag: str, words: str) -> None:
    code, out = bench("--url", "http://127.0.0.1:9/v1", *args)
    assert code == 2, out
    flat = " ".join(out.replace("│", " ").split())  # unwrap rich's error box
    assert flag in flat and words in flat


def test_an_out_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path) -> None:
    """A typo in --out must not lose a run: checked before any load (the URL is unreachable,
    so a run would fail differently)."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "taken.json").mkdir()
    for out, words in (
        (tmp_path / "afile" / "run1", "cannot make the folder"),
        (tmp_path / "taken", "taken.json is a folder"),
    ):
        code, text = bench("--url", "http://127.0.0.1:9/v1", "--out", str(out))
        flat = " ".join(text.replace("│", " ").split())
        assert code == 2 and "--out" in flat and words in flat, text


def test_unreachable_target_is_a_clear_error_within_5_s() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        start = time.monotonic()
        code, out = bench("--url", f"http://127.0.0.1:{port}/v1", "--duration", "5")
        assert time.monotonic() - start < 5
    assert code == 1
    assert "cannot reach" in out and str(port) in out


def test_json_result_and_files(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "results" / "run1"
    doc = bench_json(stub, "--concurrency", "2", "--duration", "0.5", "--out", str(out))
    assert doc["schema"] == "sovllm-bench/1" and doc["partial"] is False
    assert doc["target"]["model"] == "stub" and doc["target"]["token_counter"] == "tokenize"
    assert doc["prompt_calibration"]["exact"] is True
    s = doc["summary"]
    assert s["requests"]["ok"] == s["requests"]["measured"] > 0
    assert s["tokens"]["prompt_target_check"]["exact"] == s["requests"]["ok"]
    assert s["tokens"]["output"]["mean"] == 4
    assert set(s["latency_s"]) == {"ttft", "tpot", "itl", "e2e", "queue_delay"}
    assert set(s["latency_s"]["ttft"]) >= {"mean", "p50", "p90", "p95", "p99", "p999"}
    assert "tpot" in doc["formulas"]
    assert doc["files"] == {"requests": "run1.jsonl", "html": "run1.html"}
    saved = json.loads((tmp_path / "results" / "run1.json").read_text())
    assert saved["summary"]["requests"] == s["requests"]
    rows = [
        json.loads(line) for line in (tmp_path / "results" / "run1.jsonl").read_text().splitlines()
    ]
    assert len(rows) == s["requests"]["measured"] + s["requests"]["warmup"]
    assert {"ttft_s", "tpot_s", "itl_s", "sent_s", "response_id", "prompt_tokens"} <= set(rows[0])
    html = (tmp_path / "results" / "run1.html").read_text()
    assert html.count("<svg") >= 6
    # Offline: no script, and nothing the browser would fetch.
    assert "<script" not in html and not re.search(r"\b(src|href)=", html)


def test_server_errors_are_counted(stub: Stub) -> None:
    doc = bench_json(
        stub, "--model", "stub-500", "--concurrency", "2", "--requests", "10", "--duration", "30"
    )
    s = doc["summary"]
    assert s["requests"]["error"] == 10 and s["errors"] == {"HTTP 500": 10}
    assert s["latency_s"]["ttft"]["count"] == 0 and s["slo"]["attainment"] == 0


def test_table_shows_formulas(stub: Stub) -> None:
    code, out = bench(
        "--url",
        stub.base_url,
        *FAST,
        "--users",
        "2",
        "--think-time",
        "0.01",
        "--duration",
        "0.5",
        "--slo",
        "ttft_p95=1.0",
    )
    assert code == 0, out
    for words in (
        "TTFT",
        "TPOT",
        "first_token - sent",
        "(e2e - ttft) / (output_tokens - 1)",
        "goodput",
        "ttft p95",
    ):
        assert words in out


def test_sweep(stub: Stub) -> None:
    doc = bench_json(stub, "--concurrency", "4", "--sweep", "--levels", "1,2", "--duration", "0.3")
    assert [r["value"] for r in doc["runs"]] == [1, 2]
    # The stub answers at once, so 2 in flight may already be the client's limit: saturation.
    assert doc["sweep"]["stopped"] == "all levels run" or doc["sweep"]["stopped"].startswith(
        "saturated at 2"
    )


def test_capacity(stub: Stub) -> None:
    doc = bench_json(
        stub,
        "--users",
        "1",
        "--think-time",
        "0.01",
        "--capacity",
        "--capacity-max",
        "4",
        "--slo",
        "ttft_p95=5",
        "--duration",
        "0.3",
    )
    assert doc["capacity"]["best"] == 4
    assert doc["capacity"]["line"] == "this deployment serves 4 users at TTFT p95 ≤ 5.0 s"
    assert [p["value"] for p in doc["capacity"]["probes"]] == [1, 2, 4]


def test_replay(stub: Stub, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        "\n".join(
            json.dumps({"timestamp": i * 0.01, "prompt_tokens": 25, "output_tokens": 3})
            for i in range(12)
        )
    )
    doc = bench_json(stub, "--replay", str(trace), "--replay-speed", "2", "--duration", "30")
    s = doc["summary"]
    assert s["requests"]["ok"] == 12 and s["stop_reason"] == "trace end"
    assert s["tokens"]["output"]["mean"] == 3 and s["tokens"]["prompt"]["mean"] == 25


def test_compare_plan_without_a_profile_says_why(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(tmp_path / "data"))
    doc = bench_json(
        stub,
        "--concurrency",
        "1",
        "--duration",
        "0.3",
        "--compare-plan",
        "--plan-model",
        "smollm2-135m",
    )
    cmp = doc["compare_plan"]
    assert cmp["hardware"] == "cpu-local"
    assert "error" in cmp and "calibrate" in cmp["error"]


def test_ctrl_c_writes_a_partial_report(stub: Stub, tmp_path: Path) -> None:
    before = stub.state.requests
    out = tmp_path / "partial"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sovllm",
            "bench",
            "--url",
            stub.base_url,
            "--model",
            "stub-hold",
            "--concurrency",
            "2",
            "--duration",
            "120",
            *FAST,
            "--out",
            str(out),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 60
        while stub.state.requests < before + 2:  # the server's own count: both are streaming
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    doc = json.loads(stdout)
    assert doc["partial"] is True and doc["summary"]["stop_reason"] == "interrupted"
    saved = json.loads((tmp_path / "partial.json").read_text())
    assert saved["partial"] is True
    assert "interrupted" in (tmp_path / "partial.html").read_text()


def test_compare_plan_sets_prediction_beside_measurement(
    stub: Stub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sovllm.bench import compare
    from sovllm.engines.llamacpp.calibrate import RateSample
    from sovllm.planner.predict import Scenario
    from sovllm.planner.profile import build_profile, profile_path, save_profile
    from sovllm.planner.workload import Lengths, ThinkTime

    # A cpu-local profile, so that the planner's scenario can be built on that hardware.
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(tmp_path))
    rates = [RateSample(b, 300.0, 80.0 + 10 * b) for b in (1, 2, 4)]
    save_profile(build_profile(rates, "smollm2-135m", threads=1), profile_path(tmp_path))
    seen: list[Scenario] = []

    def fake_predict(s: Scenario) -> dict[str, Any]:
        seen.append(s)
        return {
            "fits": True,
            "ttft_s": {"p50": 0.001, "p95": 0.002},
            "tpot_s": {"p50": 0.0001},
            "output_tokens_per_s": 100.0,
            "requests_per_s": 25.0,
        }

    monkeypatch.setattr(compare, "predict_doc", fake_predict)
    code, out = bench(
        "--url",
        stub.base_url,
        *FAST,
        "--users",
        "3",
        "--think-time",
        "0.05",
        "--turns",
        "1",
        "--duration",
        "0.5",
        "--compare-plan",
        "--plan-model",
        "smollm2-135m",
        "--output-tokens",
        "lognormal:4,9",
    )
    assert code == 0, out
    # In process: the planner gets the bench's own lengths and load, a lognormal as such.
    (s,) = seen
    assert (s.model.name, s.hw.name, s.engine.name) == ("smollm2-135m", "cpu-local", "llamacpp")
    assert s.prompt == Lengths(20, 30)
    assert s.output == Lengths.parse("lognormal:4,9")
    assert (s.load.kind, s.load.value, s.load.think) == ("users", 3, ThinkTime.exponential(0.05))
    assert compare.command(s)[:3] == ["sovllm", "plan", "predict"]
    assert "lognormal:4,9" in compare.command(s)
    assert "Plan (cpu-local) vs measured" in out and "TTFT p95 (s)" in out and "%" in out


def test_capacity_for_a_rate(stub: Stub) -> None:
    doc = bench_json(
        stub,
        "--rate",
        "20",
        "--capacity",
        "--capacity-max",
        "40",
        "--slo",
        "e2e_p99=5",
        "--duration",
        "0.3",
    )
    assert doc["capacity"]["best"] == 40
    assert doc["capacity"]["line"] == "this deployment serves 40 req/s at E2E p99 ≤ 5.0 s"
