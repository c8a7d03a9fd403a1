"""`sovllm plan size --from-usage`: the service's own traffic, read back from real audit entries
(written through AuditLog) and usage rows (written by quotas.settle), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from sovllm.engines.base import GenerationOutput, ModelInfo, SamplingParams, Timings
from sovllm.governance import identity as idn
from sovllm.governance import tenants
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.quotas import authorize_and_admit, settle
from sovllm.planner.catalog import get_engine, get_hardware, get_model
from sovllm.planner.errors import PlannerError
from sovllm.planner.predict import Scenario, predict
from sovllm.planner.traffic import fit_lengths, parse_growth, read_traffic
from sovllm.planner.workload import Lengths, Load
from sovllm.store.db import Database
from sovllm.store.schema import AuditEntry

QUIET_DAY = dt.date(2026, 11, 1)
BUSY_DAY = dt.date(2026, 11, 2)
BUSY_HOUR = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC).timestamp()
QUIET_HOUR = dt.datetime(2026, 11, 1, 14, 0, tzinfo=dt.UTC).timestamp()
E2E_S = 2.0
# The busy hour: 60 requests, 55 s apart, from 6 users; long-tailed answers.
BUSY_PROMPTS = [100 + 10 * i for i in range(60)]
BUSY_OUTPUTS = [50] * 50 + [400] * 10
MODEL = ModelInfo("smollm", "/m.gguf", "0" * 64, 4096, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Service:
    """What the request path writes for one answered request: admission and usage (quotas),
    request.begin and request.end (AuditLog), at simulated times."""

    def __init__(self, db: Database, tmp: Path) -> None:
        self.db = db
        self.clock = Clock()
        signer = Signer.load_or_create(tmp / "signing.key", "test-log")
        self.log = AuditLog(db, signer, "test-log", clock=self.clock)
        tenants.create_tenant(db, "clinic")
        self.raw_key, _ = tenants.create_key(db, "clinic", idn.Role.USER)
        self.n = 0

    def answer(self, at: float, prompt: int, completion: int, user: str) -> str:
        self.n += 1
        rid = f"req-{self.n}"
        principal, ticket = authorize_and_admit(
            self.db, self.raw_key, frozenset({idn.Role.USER}), rid, prompt + completion
        )
        self.clock.now = at
        begin = records.request_begin(
            records.Begin(
                principal=principal,
                route="/v1/chat/completions",
                model=MODEL,
                sampling=SamplingParams(),
                prompt_tokens=prompt,
                reserved_tokens=completion,
                prompt_hash="h",
                user_pseudonym=user,
                pii_found={},
            )
        )
        self.log.append("request.begin", begin, rid).result(timeout=30)
        timings = Timings(arrival=0.0, scheduled=0.01, first_token=0.3, finished=E2E_S)
        out = GenerationOutput("", (), prompt, completion, "stop", timings)
        self.clock.now = at + E2E_S
        self.log.append("request.end", records.request_end(out, "ok", None), rid).result(30)
        settle(self.db, ticket, prompt, completion, now=at + E2E_S)
        return rid

    def failed(self, at: float) -> None:
        """A request that failed before the engine: its end entry has no token counts."""
        self.n += 1
        self.clock.now = at
        self.log.append("request.end", records.request_end(None, "error", None), f"req-{self.n}")


def record(db: Database, tmp: Path) -> Service:
    svc = Service(db, tmp)
    quiet = [svc.answer(QUIET_HOUR + 300 * i, 1000, 100, f"q{i % 2}") for i in range(10)]
    for i in range(60):
        svc.answer(BUSY_HOUR + 55 * i, BUSY_PROMPTS[i], BUSY_OUTPUTS[i], f"u{i % 6}")
    for i in range(3):
        svc.failed(BUSY_HOUR + 100 + i)
    svc.log.checkpoint()
    # Four of the quiet day's end entries pruned past retention: the body goes, the row stays.
    with db.transaction() as s:
        s.execute(
            update(AuditEntry)
            .where(AuditEntry.kind == "request.end", AuditEntry.request_id.in_(quiet[:4]))
            .values(body=None)
        )
    return svc


def test_the_busy_day_is_read_fitted_and_its_peak_hour_found(db: Database, tmp_path: Path) -> None:
    record(db, tmp_path)
    t = read_traffic(db, BUSY_DAY)
    assert len(t.requests) == 60 and t.pruned == 0 and t.without_tokens == 3
    assert t.first == pytest.approx(BUSY_HOUR) and t.peak_start == pytest.approx(BUSY_HOUR)
    assert t.peak_requests == 60 and t.peak_users == 6
    assert t.peak_e2e_mean_s == pytest.approx(E2E_S)
    # 6 users send 60 requests an hour: each cycles every 360 s, 2 s of it waiting for answers.
    assert t.think_time_s == pytest.approx(360 - E2E_S)
    assert (t.usage_requests, t.usage_prompt_tokens) == (60, sum(BUSY_PROMPTS))
    assert t.usage_completion_tokens == sum(BUSY_OUTPUTS)
    prompt = fit_lengths([r.prompt_tokens for r in t.requests])
    out = fit_lengths([r.output_tokens for r in t.requests])
    assert (prompt.kind, prompt.median, prompt.p95) == ("lognormal", 395, 660)
    assert (out.kind, out.median, out.p95) == ("lognormal", 50, 400)
    assert [r.prompt_tokens for r in t.peak] == BUSY_PROMPTS


def test_pruned_entries_are_skipped_and_counted(db: Database, tmp_path: Path) -> None:
    record(db, tmp_path)
    t = read_traffic(db)
    assert len(t.requests) == 66 and t.pruned == 4
    assert t.usage_requests == 70  # the usage tables still count the pruned requests
    assert t.peak_requests == 60 and t.peak_users == 6  # the quiet day is not the peak
    assert statistics.median(r.prompt_tokens for r in t.requests) > 395


def test_no_recorded_request_is_a_clear_error(db: Database) -> None:
    with pytest.raises(PlannerError, match=r"no request.end entries .* nothing to size from"):
        read_traffic(db, BUSY_DAY)


@pytest.mark.parametrize(("text", "value"), [("3x", 3.0), ("1.5", 1.5), (" 2X ", 2.0)])
def test_growth_factor(text: str, value: float) -> None:
    assert parse_growth(text) == value


@pytest.mark.parametrize("text", ["x", "0x", "-2", "nan"])
def test_bad_growth_factor(text: str) -> None:
    with pytest.raises(ValueError):
        parse_growth(text)


def test_fixed_lengths_fit_as_fixed() -> None:
    assert fit_lengths([200] * 9) == Lengths(200, 200)
    assert fit_lengths([0, 0, 0]) == Lengths(1, 1)


def test_a_trace_replays_each_request_with_its_own_lengths_over_the_replicas() -> None:
    outputs = [5, 50, 7, 300, 9, 11]
    arrivals = tuple(float(30 * i) for i in range(6))
    s = Scenario(
        model=get_model("llama-3.1-8b"),
        hw=get_hardware("h100-sxm"),
        engine=get_engine("vllm"),
        precision="bf16",
        tp=1,
        pp=1,
        num_gpus=2,
        prompt=Lengths.from_values([100] * 6),
        output=Lengths.from_values(outputs),
        load=Load("trace", 6, arrivals=arrivals),
    )
    pred = predict(s)
    assert pred.sim is not None
    # Replica 0 takes requests 0, 2, 4 (5 + 7 + 9 tokens), replica 1 takes 1, 3, 5.
    assert pred.sim.completed == 3
    assert pred.sim.output_tokens in (5 + 7 + 9, 50 + 300 + 11)
    # Requests 30 s apart never queue, and every recorded output token is generated, no more.
    assert pred.sim.peak_waiting == 0 and pred.sim.ttft.p95 < 0.1
    per_request = pred.output_tokens_per_s / pred.requests_per_s
    assert per_request == pytest.approx(sum(outputs) / 6)
    # The run ends when the last request (arriving at 150 s, 11 tokens) is answered.
    assert 150 < 6 / pred.requests_per_s < 152


def _sovllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


SIZE = ["plan", "size", "--model", "llama-3.1-8b", "--gpus", "h100-sxm", "--precisions", "bf16"]


def _size_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    res = _sovllm(env, *SIZE, "--from-usage", *args, "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_plan_size_from_usage_sizes_for_the_peak_times_the_growth(
    db: Database, tmp_path: Path, database_url_any: str
) -> None:
    record(db, tmp_path)
    env = {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "SOVLLM_DATABASE_URL": database_url_any}
    doc = _size_json(env, "--since", BUSY_DAY.isoformat(), "--growth", "3x")
    t = doc["traffic"]
    assert t["since"] == "2026-11-02" and t["first_arrival"] == "2026-11-02T09:00:00+00:00"
    assert (t["requests"], t["skipped_pruned"], t["skipped_without_tokens"]) == (60, 0, 3)
    assert t["peak"]["requests_per_hour"] == 60 and t["peak"]["users"] == 6
    assert (t["sized_for_users"], t["sized_for_requests_per_hour"]) == (18, 180)
    assert t["prompt_tokens"] == "lognormal:395,660" and t["output_tokens"] == "lognormal:50,400"
    assert doc["inputs"]["users"] == 18
    assert doc["inputs"]["think_time_s"] == pytest.approx(358)
    assert doc["inputs"]["prompt_tokens"] == "lognormal:395,660"
    best = doc["recommendation"]
    assert best["replicas"] * best["users_per_replica"] >= 18

    text = _sovllm(env, *SIZE, "--from-usage", "--since", "2026-11-02", "--growth", "3x")
    assert text.returncode == 0, text.stderr
    out = " ".join(text.stdout.split())
    assert "Recorded traffic 2026-11-02T09:00:00+00:00" in out and "60 requests read" in out
    assert "Peak hour from 2026-11-02T09:00:00+00:00: 60 requests, 6 users" in out
    assert "Sized for x3: 18 users, 180 requests/hour" in out

    text = _sovllm(
        env, *SIZE, "--from-usage", "--since", "2026-11-02", "--growth", "3x", "--replay"
    )
    out = " ".join(text.stdout.split())
    assert "Replayed: the peak hour's 60 requests as recorded, arriving 3x as fast" in out

    replay = _size_json(env, "--since", "2026-11-02", "--growth", "3x", "--replay")
    assert replay["traffic"]["replay"] is True
    assert replay["recommendation"]["replicas"] >= 1
    assert replay["inputs"]["prompt_tokens"].startswith("60 from file, 100-690")


def test_plan_size_from_usage_refuses_what_the_record_decides(
    db: Database, tmp_path: Path, database_url_any: str
) -> None:
    env = {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "SOVLLM_DATABASE_URL": database_url_any}
    empty = _sovllm(env, *SIZE, "--from-usage")
    assert empty.returncode == 2 and "no request.end entries" in empty.stderr
    assert "Traceback" not in empty.stderr
    both = _sovllm(env, *SIZE, "--from-usage", "--users", "10")
    assert both.returncode == 2 and "--users" in both.stderr
    for flag in (["--replay"], ["--growth", "3x"], ["--since", "2026-11-02"]):
        alone = _sovllm(env, *SIZE, "--users", "10", *flag)
        assert alone.returncode == 2 and "only with --from-usage" in alone.stderr, flag
    bad = _sovllm(env, *SIZE, "--from-usage", "--since", "yesterday")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_replay_sizing_finds_the_fewest_replicas_that_meet_the_slo() -> None:
    from dataclasses import replace

    from sovllm.planner.cost import CostParams
    from sovllm.planner.question import SizingQuestion
    from sovllm.planner.search import size_replay, violation
    from sovllm.planner.slo import SLO

    # A burst: 120 requests of 4,000-token prompts within two seconds.
    n = 120
    trace = Load("trace", n, arrivals=tuple(i / 60 for i in range(n)))
    prompt, output = Lengths.from_values([4000] * n), Lengths.from_values([100] * n)
    slo = SLO.p95(ttft_s=1.0, tpot_s=0.1)
    cost = CostParams()
    result = size_replay(
        SizingQuestion(
            model=get_model("llama-3.1-8b"),
            engine=get_engine("vllm"),
            gpus=(get_hardware("h100-sxm"),),
            precisions=("bf16",),
            users=12,
            prompt=prompt,
            output=output,
            think_time_s=0.0,
            slo=slo,
            cost=cost,
            max_tp=1,
            trace=trace,
        )
    )
    best = result.best
    assert best is not None and best.prediction is not None
    assert best.replicas > 1 and not violation(slo, best.prediction)
    fewer = replace(best.prediction.scenario, num_gpus=best.replicas - 1)
    assert violation(slo, predict(fewer))
