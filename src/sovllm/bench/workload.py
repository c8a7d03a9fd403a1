"""Load patterns: when each request goes out, and with what conversation.

- closed-loop users: each user thinks, asks, waits for the whole answer, thinks again; the
  conversation grows turn by turn (the history is resent) for `turns` turns, then starts over;
- open loop: arrivals at a rate with gamma-distributed gaps (shape 1 = Poisson), whatever the
  server's state, optionally capped in flight (the wait for the cap is queue delay, not TTFT);
- fixed concurrency: N workers that each send the next request as soon as one ends;
- replay: a JSONL trace of arrival offsets and lengths.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sovllm.bench.config import BadSpec
from sovllm.bench.prompts import Messages, words_text
from sovllm.bench.record import RequestRecord
from sovllm.bench.runner import Run
from sovllm.planner.workload import Load

Driver = Callable[[Run], Awaitable[None]]


def arrival_gaps(rng: random.Random, rate: float, burstiness: float) -> Iterator[float]:
    """Gaps between arrivals: gamma with shape `burstiness` and mean 1/rate.

    Shape 1 is exponential (Poisson arrivals); below 1 arrivals bunch up, above 1 they even out.
    """
    scale = 1.0 / (rate * burstiness)
    while True:
        yield rng.gammavariate(burstiness, scale)


def driver_for(load: Load) -> Driver:
    if load.kind == "users":
        return closed_loop_users
    if load.kind == "rate":
        return open_loop
    if load.kind == "concurrency":
        return fixed_concurrency
    return replay


async def closed_loop_users(run: Run) -> None:
    users = int(run.load.value)
    await asyncio.gather(*(_user(run, u) for u in range(users)))


async def _user(run: Run, user: int) -> None:
    rng = run.rng(user)
    think = run.load.think
    turns = run.load.turns
    keep_text = turns > 1
    # Users arrive spread over one think time, not in lockstep at t=0.
    due = run.t0 + rng.uniform(0, think.mean)
    conversation = 0
    context = run.target.context_length
    while True:
        messages, target = run.first_turn(rng)
        for turn in range(1, turns + 1):
            if turn > 1:
                message, target = run.follow_up(rng)
                messages.append(message)
            if not await run.sleep_until(due):
                return
            record = run.new_record(
                due,
                user=user,
                conversation=user * 1_000_000 + conversation,
                turn=turn,
                prompt_tokens_target=target if turn == 1 else None,
            )
            if record is None:
                return
            await run.send(record, messages, keep_text)
            due = time.perf_counter() + think.sample(rng)
            if record.status != "ok":
                break
            messages.append({"role": "assistant", "content": record.text})
            if context and record.prompt_tokens and record.output_tokens:
                # The next turn resends everything; start over before it cannot fit.
                grown = record.prompt_tokens + record.output_tokens
                next_turn = run.calibration.overhead + run.workload.prompt.hi
                if grown + next_turn + run.workload.output.hi > context:
                    break
        conversation += 1


async def open_loop(run: Run) -> None:
    rng = run.rng(0)
    cap = run.load.max_concurrency
    gate = asyncio.Semaphore(cap) if cap else None
    tasks: set[asyncio.Task[None]] = set()
    due = run.t0
    for gap in arrival_gaps(rng, run.load.value, run.load.burstiness):
        due += gap
        if not await run.sleep_until(due):
            break
        record = run.new_record(due)
        if record is None:
            break
        messages, target = run.first_turn(rng)
        record.prompt_tokens_target = target
        task = asyncio.create_task(_gated(run, gate, record, messages))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


async def _gated(
    run: Run, gate: asyncio.Semaphore | None, record: RequestRecord, msgs: Messages
) -> None:
    if gate is None:
        await run.send(record, msgs, keep_text=False)
        return
    async with gate:
        await run.send(record, msgs, keep_text=False)


async def fixed_concurrency(run: Run) -> None:
    async def worker(w: int) -> None:
        rng = run.rng(w)
        while True:
            record = run.new_record(time.perf_counter())
            if record is None:
                return
            messages, target = run.first_turn(rng)
            record.prompt_tokens_target = target
            await run.send(record, messages, keep_text=False)

    await asyncio.gather(*(worker(w) for w in range(int(run.load.value))))


# -- replay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceItem:
    offset_s: float
    output_tokens: int
    messages: Messages | None = None
    prompt_tokens: int | None = None


def load_trace(path: Path) -> list[TraceItem]:
    """One JSON object a line: `timestamp` (s), `output_tokens`, and `prompt_tokens` or
    `messages` or `prompt`. Offsets are taken relative to the first line's timestamp."""
    flag = "--replay"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BadSpec(flag, f"cannot read {path}: {exc.strerror}") from None
    items: list[TraceItem] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ts = float(row["timestamp"])
            out = int(row.get("output_tokens", row.get("max_tokens", 0)))
            messages = row.get("messages")
            if messages is None and "prompt" in row:
                messages = [{"role": "user", "content": str(row["prompt"])}]
            prompt = row.get("prompt_tokens")
            if messages is None and not isinstance(prompt, int):
                raise KeyError("prompt_tokens, messages or prompt")
        except (ValueError, KeyError, TypeError) as exc:
            raise BadSpec(flag, f"{path}:{n}: bad trace line ({exc})") from None
        if out < 1:
            raise BadSpec(flag, f"{path}:{n}: output_tokens must be at least 1")
        items.append(TraceItem(ts, out, messages, prompt if isinstance(prompt, int) else None))
    if not items:
        raise BadSpec(flag, f"{path} holds no requests")
    items.sort(key=lambda i: i.offset_s)
    start = items[0].offset_s
    return [
        TraceItem(i.offset_s - start, i.output_tokens, i.messages, i.prompt_tokens) for i in items
    ]


async def replay(run: Run) -> None:
    assert run.load.replay_path is not None
    trace = load_trace(Path(run.load.replay_path))
    speed = run.load.value
    rng = run.rng(0)
    tasks: set[asyncio.Task[None]] = set()
    for item in trace:
        due = run.t0 + item.offset_s / speed
        if not await run.sleep_until(due):
            break
        record = run.new_record(due)
        if record is None:
            break
        record.output_tokens_target = item.output_tokens
        if item.messages is not None:
            messages = item.messages
        else:
            assert item.prompt_tokens is not None
            record.prompt_tokens_target = item.prompt_tokens
            words = run.calibration.words_for(item.prompt_tokens)
            messages = [{"role": "user", "content": words_text(rng, words)}]
        task = asyncio.create_task(run.send(record, messages, keep_text=False))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    else:
        run.halt("trace end")
    if tasks:
        await asyncio.gather(*tasks)
