"""`sovllm bench` for 20 seconds against a real `sovllm serve` with the embedded model."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sovllm.cli.main import app
from sovllm.engines.llamacpp.calibrate import RateSample
from sovllm.planner.profile import build_profile, profile_path, save_profile
from sovllm.planner.workload import Lengths
from tests.conftest import MODEL_ID, Server


def test_a_20_second_bench(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cpu-local profile in this data folder (rates of the order `plan calibrate` measures
    # here), so --compare-plan must answer with numbers; without one it says why (unit tests).
    data = tmp_path / "data"
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(data))
    rates = [RateSample(b, 300.0, 80.0 + 10 * b) for b in (1, 2, 4, 8)]
    save_profile(build_profile(rates, MODEL_ID, threads=1), profile_path(data))
    out = tmp_path / "results" / "run1"
    args = [
        "bench",
        "--url",
        server.base_url,
        "--api-key",
        server.api_key,
        "--users",
        "2",
        "--think-time",
        "0.2",
        "--turns",
        "2",
        # The template alone is 30 tokens and the machine is shared: keep the work small.
        "--prompt-tokens",
        "34-44",
        "--output-tokens",
        "6",
        # No warmup, so that the first turns (the ones with a target length) are measured;
        # warmup exclusion is covered by the unit tests.
        "--warmup",
        "0",
        "--duration",
        "20",
        "--grace",
        "30",
        "--slo",
        "ttft_p95=30,tpot_p95=5",
        "--compare-plan",
        "--out",
        str(out),
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output[result.output.index("{") :])

    assert doc["schema"] == "sovllm-bench/1" and doc["partial"] is False
    assert doc["target"]["model"] == MODEL_ID
    # sovllm has no /tokenize: lengths are calibrated from usage, and exact.
    assert doc["target"]["token_counter"] == "usage"
    assert doc["prompt_calibration"]["exact"] is True
    s = doc["summary"]
    req = s["requests"]
    assert req["ok"] >= 2 and req["error"] == 0, s["errors"]
    tokens = s["tokens"]
    assert tokens["count_source"] == {"usage": req["ok"]}
    first_turns = tokens["prompt_target_check"]
    assert first_turns["checked"] >= 1 and first_turns["exact"] == first_turns["checked"]
    assert tokens["output_target_check"]["exact"] == req["ok"]
    assert tokens["output"]["min"] == tokens["output"]["max"] == 6
    lat = s["latency_s"]
    assert 0 < lat["ttft"]["p50"] <= lat["e2e"]["p50"]
    assert lat["tpot"]["count"] == req["ok"]
    # 6 tokens give at most 5 gaps; a chunk may carry two tokens (held-back UTF-8 or stop text).
    assert req["ok"] <= lat["itl"]["count"] <= 5 * req["ok"]
    assert s["throughput"]["output_tokens_per_s"] > 0
    assert s["window"]["duration_s"] >= 20
    assert [t["metric"] for t in s["slo"]["terms"]] == ["ttft", "tpot"]
    assert 0 <= s["slo"]["attainment"] <= 1

    # The conversation grows: a second turn resends the first with its answer.
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert len(rows) == req["measured"] + req["warmup"]
    by_conv: dict[int, dict[int, dict[str, Any]]] = {}
    for row in rows:
        by_conv.setdefault(row["conversation"], {})[row["turn"]] = row
    pairs = [c for c in by_conv.values() if 1 in c and 2 in c and c[2]["status"] == "ok"]
    assert pairs
    assert all(c[2]["prompt_tokens"] > c[1]["prompt_tokens"] + c[1]["output_tokens"] for c in pairs)
    # Second turns find their history in the server's prefix cache, and the bench says how much.
    assert any(c[2]["cached_tokens"] > 0 for c in pairs)
    assert all(c[1]["cached_tokens"] is not None for c in pairs)
    assert 0 < tokens["cached_prompt_fraction"] < 1

    html = out.with_suffix(".html").read_text()
    assert "TTFT CDF" in html and "Output throughput" in html and html.count("<svg") >= 6
    assert "<script" not in html and not re.search(r"\b(src|href)=", html)

    cmp = doc["compare_plan"]
    assert cmp["hardware"] == "cpu-local" and "error" not in cmp, cmp
    assert cmp["command"][:3] == ["sovllm", "plan", "predict"]
    # The measured prefix-cache share went to the planner.
    share = cmp["command"][cmp["command"].index("--cached-prompt-fraction") + 1]
    assert float(share) == pytest.approx(tokens["cached_prompt_fraction"], abs=1e-3)
    by_metric = {row["metric"]: row for row in cmp["rows"]}
    assert list(by_metric) == [
        "TTFT p50 (s)",
        "TTFT p95 (s)",
        "TPOT p50 (s)",
        "output tokens/s",
        "requests/s",
    ]
    assert by_metric["TTFT p50 (s)"]["measured"] == lat["ttft"]["p50"]
    out_tps = by_metric["output tokens/s"]
    assert out_tps["measured"] == s["throughput"]["output_tokens_per_s"]
    for row in cmp["rows"]:
        assert row["predicted"] > 0 and row["measured"] > 0, row
        want = (row["predicted"] - row["measured"]) / row["measured"] * 100
        assert row["error_pct"] == pytest.approx(want)


def test_lognormal_lengths_against_the_real_engine(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #16: the bench draws each request's prompt and answer length from a seeded
    # lognormal, the real server is sent (and answers) exactly those lengths, and
    # --compare-plan hands the planner the same distributions. Small, so the run stays short.
    data = tmp_path / "data"
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(data))
    rates = [RateSample(b, 300.0, 80.0 + 10 * b) for b in (1, 2, 4)]
    save_profile(build_profile(rates, MODEL_ID, threads=1), profile_path(data))
    out = tmp_path / "lognormal"
    prompt, answer = "lognormal:64,128", "lognormal:8,20"
    args = [
        "bench",
        "--url",
        server.base_url,
        "--api-key",
        server.api_key,
        "--users",
        "3",
        "--think-time",
        "0.1",
        "--turns",
        "1",
        "--prompt-tokens",
        prompt,
        "--output-tokens",
        answer,
        "--requests",
        "18",
        "--duration",
        "120",
        "--warmup",
        "0",
        "--seed",
        "7",
        "--compare-plan",
        "--out",
        str(out),
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output[result.output.index("{") :])
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 12, doc["summary"]["errors"]

    # What was sent is what was drawn: the answers have the drawn lengths (ignore_eos), and
    # the prompts the drawn lengths wherever the draw exceeds the chat template (~30 tokens).
    assert all(r["output_tokens"] == r["output_tokens_target"] for r in ok)
    fitted = [r for r in ok if r["prompt_tokens_target"] > 40]
    assert fitted and all(r["prompt_tokens"] == r["prompt_tokens_target"] for r in fitted)
    answers = sorted(r["output_tokens"] for r in ok)
    prompts = sorted(r["prompt_tokens"] for r in ok)
    # Varied lengths, not one value, within the lognormal's clipped range.
    assert len(set(answers)) >= 4 and len(set(prompts)) >= 6
    hi = {"prompt": Lengths.parse(prompt).hi, "answer": Lengths.parse(answer).hi}
    assert all(1 <= n <= hi["answer"] for n in answers)
    assert all(n <= hi["prompt"] for n in prompts)
    # The sample median is near the median asked for. With n >= 12 draws the standard error of
    # the log of a sample median is about 1.25 sigma / sqrt(n): 0.20 for the answers (sigma
    # 0.56) and 0.15 for the prompts (sigma 0.42). Three of those are factors of 1.8 and 1.6.
    assert 8 / 1.8 <= statistics.median(answers) <= 8 * 1.8
    assert 64 / 1.6 <= statistics.median(prompts) <= 64 * 1.6

    cmp = doc["compare_plan"]
    assert "error" not in cmp, cmp
    assert cmp["inputs"]["input_tokens"] == prompt
    assert cmp["inputs"]["output_tokens"] == answer
    assert cmp["command"][cmp["command"].index("--output-tokens") + 1] == answer
    assert all(row["predicted"] > 0 and row["measured"] > 0 for row in cmp["rows"]), cmp
