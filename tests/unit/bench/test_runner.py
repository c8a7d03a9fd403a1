"""Whole runs against the stub: each load pattern, the bounds, warmup, and interruption."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

import pytest

from sovllm.bench.client import BenchClient
from sovllm.bench.config import RunBounds, Workload
from sovllm.bench.metrics import summarise
from sovllm.bench.prompts import fit
from sovllm.bench.record import RequestRecord
from sovllm.bench.runner import Run, RunResult
from sovllm.bench.workload import driver_for
from sovllm.planner.slo import SLO
from sovllm.planner.workload import Lengths, Load, ThinkTime
from tests.conftest import wait_until_async
from tests.unit.bench.stub import TEMPLATE_OVERHEAD, Stub

CAL = fit([(8, 8 + TEMPLATE_OVERHEAD), (32, 32 + TEMPLATE_OVERHEAD)], "tokenize")


async def run(
    stub: Stub,
    load: Load,
    bounds: RunBounds,
    model: str = "stub",
    interrupt: asyncio.Event | None = None,
    prompt: Lengths = Lengths(20, 30),
    output: Lengths = Lengths(3, 6),
) -> RunResult:
    async with BenchClient(stub.base_url, None, 64, bounds.request_timeout_s) as c:
        target = await c.discover(model)
        workload = Workload(prompt=prompt, output=output, seed=11)
        r = Run(c, target, workload, load, bounds, CAL, seed=11)
        return await r.execute(driver_for(load), interrupt)


def max_overlap(records: Sequence[RequestRecord]) -> int:
    events = sorted(
        [(r.sent, 1) for r in records if r.sent is not None]
        + [(r.end, -1) for r in records if r.end is not None]
    )
    peak = now = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


async def test_request_cap_ends_an_open_loop_run(stub: Stub) -> None:
    res = await run(stub, Load("rate", 200.0), RunBounds(30.0, 40, warmup_s=0.0))
    assert res.reason == "requests"
    assert len(res.records) == 40
    assert all(r.status == "ok" for r in res.records)
    # Exact lengths: the stub counts words + its template, as the calibration says.
    assert all(r.prompt_tokens == r.prompt_tokens_target for r in res.records)
    assert all(r.output_tokens == r.output_tokens_target for r in res.records)
    assert all(3 <= r.output_tokens_target <= 6 for r in res.records)
    # Arrivals are scheduled ahead of time; the client's lateness is queue delay.
    scheduled = [r.scheduled for r in res.records]
    assert scheduled == sorted(scheduled)


async def test_lognormal_lengths_are_drawn_per_request(stub: Stub) -> None:
    # Each request draws its prompt and its answer length from the seeded lognormal; the stub
    # counts tokens exactly, so what was sent is what was drawn.
    prompt, output = Lengths.parse("lognormal:40,90"), Lengths.parse("lognormal:8,20")
    load, bounds = Load("rate", 200.0), RunBounds(30.0, 60, warmup_s=0.0)
    res = await run(stub, load, bounds, prompt=prompt, output=output)
    assert len(res.records) == 60 and all(r.status == "ok" for r in res.records)
    asked = [r.output_tokens_target for r in res.records]
    assert all(r.output_tokens == r.output_tokens_target for r in res.records)
    assert all(r.prompt_tokens == r.prompt_tokens_target for r in res.records)
    prompts = [r.prompt_tokens for r in res.records if r.prompt_tokens is not None]
    # Varied, within the distribution's clipped range [1, 99.9th percentile] (a prompt cannot
    # be shorter than the chat template), and around the medians asked for.
    assert len(set(asked)) > 5 and len(set(prompts)) > 10
    assert all(1 <= n <= output.hi for n in asked)
    assert all(TEMPLATE_OVERHEAD < n <= prompt.hi for n in prompts)
    assert 4 <= sorted(asked)[30] <= 16 and 25 <= sorted(prompts)[30] <= 65
    # The seed decides the lengths: the same run draws them again.
    again = await run(stub, load, bounds, prompt=prompt, output=output)
    assert [r.output_tokens_target for r in again.records] == asked
    assert sorted(r.prompt_tokens_target or 0 for r in again.records) == sorted(
        r.prompt_tokens_target or 0 for r in res.records
    )


async def test_duration_and_warmup(stub: Stub) -> None:
    res = await run(stub, Load("rate", 100.0), RunBounds(0.4, 10_000, warmup_s=0.2))
    assert res.reason == "duration"
    warm = [r for r in res.records if r.warmup]
    measured = [r for r in res.records if not r.warmup]
    assert warm and measured
    assert all(r.scheduled < res.warmup_end for r in warm)
    assert all(res.warmup_end <= r.scheduled < res.stop_at for r in measured)
    s = summarise(res, SLO())
    assert s["requests"]["warmup"] == len(warm) and s["requests"]["measured"] == len(measured)


async def test_concurrency_cap_on_an_open_loop(stub: Stub) -> None:
    load = Load("rate", 1000.0, max_concurrency=2)
    res = await run(stub, load, RunBounds(30.0, 60, warmup_s=0.0))
    assert max_overlap(res.records) <= 2
    # Waiting for the cap is queue delay, not TTFT.
    assert any(r.sent is not None and r.sent - r.scheduled > 0 for r in res.records)


async def test_fixed_concurrency(stub: Stub) -> None:
    res = await run(stub, Load("concurrency", 3.0), RunBounds(30.0, 30, warmup_s=0.0))
    assert len(res.records) == 30 and res.reason == "requests"
    assert max_overlap(res.records) <= 3


async def test_closed_loop_conversations_grow(stub: Stub) -> None:
    load = Load("users", 2.0, think=ThinkTime(0.0, 0.0, "exponential"), turns=3)
    res = await run(stub, load, RunBounds(30.0, 12, warmup_s=0.0))
    assert res.reason == "requests"
    by_conversation: dict[int, list[RequestRecord]] = {}
    for r in res.records:
        by_conversation.setdefault(r.conversation, []).append(r)
    assert {r.user for r in res.records} == {0, 1}
    full = [c for c in by_conversation.values() if len(c) == 3]
    assert full
    for conv in full:
        assert [r.turn for r in conv] == [1, 2, 3]
        # Each turn resends the history: the prompt grows by the answer and the new message.
        tokens = [r.prompt_tokens or 0 for r in conv]
        assert tokens[0] < tokens[1] < tokens[2]
        assert conv[0].prompt_tokens == conv[0].prompt_tokens_target
        assert conv[1].prompt_tokens_target is None
        # A user waits for its answer before the next turn.
        assert all(
            a.end is not None and b.sent is not None and a.end <= b.sent
            for a, b in itertools.pairwise(conv)
        )


async def test_think_time_spaces_a_users_turns(stub: Stub) -> None:
    load = Load("users", 1.0, think=ThinkTime(0.05, 0.05, "uniform"), turns=2)
    res = await run(stub, load, RunBounds(30.0, 4, warmup_s=0.0))
    gaps = [b.scheduled - (a.end or 0) for a, b in zip(res.records, res.records[1:], strict=False)]
    assert all(g >= 0.05 for g in gaps)


async def test_failed_turn_starts_a_new_conversation(stub: Stub) -> None:
    load = Load("users", 1.0, think=ThinkTime(0.0, 0.0, "exponential"), turns=3)
    res = await run(stub, load, RunBounds(30.0, 3, warmup_s=0.0), model="stub-500")
    assert [r.turn for r in res.records] == [1, 1, 1]
    assert all(r.error_type == "HTTP 500" for r in res.records)
    assert len({r.conversation for r in res.records}) == 3


async def test_a_request_that_never_finishes_times_out(stub: Stub) -> None:
    res = await run(
        stub,
        Load("concurrency", 1.0),
        RunBounds(30.0, 1, warmup_s=0.0, request_timeout_s=0.3),
        model="stub-hold",
    )
    (r,) = res.records
    assert r.status == "error" and r.error_type == "timeout"
    assert r.first_token is not None  # it had started streaming


async def test_grace_then_cancel(stub: Stub) -> None:
    # Requests still in flight after the grace period are cancelled and counted incomplete.
    res = await run(
        stub,
        Load("concurrency", 2.0),
        RunBounds(0.2, 100, warmup_s=0.0, grace_s=0.1),
        model="stub-hold",
    )
    assert res.records and all(r.status == "incomplete" for r in res.records)
    assert all(r.error_type == "cancelled" for r in res.records)
    s = summarise(res, SLO())
    assert s["requests"]["incomplete"] == 2 and s["errors"] == {"cancelled": 2}


async def test_interrupt_stops_at_once(stub: Stub) -> None:
    interrupt = asyncio.Event()
    before = stub.state.requests

    async def press_ctrl_c() -> None:
        # Polls the server's own count: Ctrl-C lands once both requests are streaming.
        await wait_until_async(lambda: stub.state.requests >= before + 2, "both requests", 30)
        interrupt.set()

    presser = asyncio.create_task(press_ctrl_c())
    start = time.perf_counter()
    res = await run(
        stub,
        Load("concurrency", 2.0),
        RunBounds(60.0, 100, warmup_s=0.0, grace_s=60.0),
        model="stub-hold",
        interrupt=interrupt,
    )
    await presser
    assert res.interrupted and res.reason == "interrupted"
    assert time.perf_counter() - start < 30  # neither the duration nor the grace was waited out
    assert all(r.error_type == "cancelled" for r in res.records)


@pytest.mark.parametrize("burstiness", [1.0, 0.5])
async def test_open_loop_rate_is_kept(stub: Stub, burstiness: float) -> None:
    res = await run(
        stub, Load("rate", 100.0, burstiness=burstiness), RunBounds(30.0, 100, warmup_s=0.0)
    )
    span = res.records[-1].scheduled - res.t0
    # 100 arrivals at 100/s: the schedule (not the wall clock) spans about one second.
    assert 0.6 < span < 1.6


async def test_ctrl_c_during_the_grace_period(stub: Stub) -> None:
    load = Load("concurrency", 2.0)
    bounds = RunBounds(0.1, 100, warmup_s=0.0, grace_s=120.0)
    interrupt = asyncio.Event()
    async with BenchClient(stub.base_url, None, 8, 60.0) as c:
        target = await c.discover("stub-hold")
        workload = Workload(prompt=Lengths(20, 30), output=Lengths(3, 6), seed=1)
        r = Run(c, target, workload, load, bounds, CAL, seed=1)

        async def press_ctrl_c_in_grace() -> None:
            await r.stop.wait()  # the load has stopped; the held requests are in their grace
            interrupt.set()

        presser = asyncio.create_task(press_ctrl_c_in_grace())
        res = await r.execute(driver_for(load), interrupt)
        await presser
    assert res.reason == "duration" and res.interrupted
    assert [x.error_type for x in res.records] == ["cancelled", "cancelled"]
    assert summarise(res, SLO())["requests"]["measured"] == 0
