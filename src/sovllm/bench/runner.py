"""One run of one load level: warmup, the measured window, the stop, the grace period.

The driver (a workload from `workload.py`) decides *when* requests go out; the run decides
whether they may (deadline, request cap, Ctrl-C), tags warmup requests, and sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sovllm.bench.client import BenchClient, Target
from sovllm.bench.config import RunBounds, Workload
from sovllm.bench.prompts import Calibration, Messages, words_text
from sovllm.bench.record import RequestRecord
from sovllm.planner.workload import Load

StopReason = str


@dataclass
class RunResult:
    load: Load
    records: list[RequestRecord]
    t0: float
    warmup_end: float
    stop_at: float
    stopped_at: float
    finished_at: float
    reason: StopReason
    interrupted: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class Run:
    """Shared state of one run, handed to the workload driver."""

    def __init__(
        self,
        client: BenchClient,
        target: Target,
        workload: Workload,
        load: Load,
        bounds: RunBounds,
        calibration: Calibration,
        seed: int,
    ) -> None:
        self.client = client
        self.target = target
        self.workload = workload
        self.load = load
        self.bounds = bounds
        self.calibration = calibration
        self.seed = seed
        self.records: list[RequestRecord] = []
        self.measured = 0
        self.in_flight = 0
        self.stop = asyncio.Event()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reason: StopReason = "duration"
        self.t0 = time.perf_counter()
        self.warmup_end = self.t0 + bounds.warmup_s
        self.stop_at = self.warmup_end + bounds.duration_s
        self.stopped_at: float | None = None
        self.interrupted = False

    # -- what drivers call ----------------------------------------------------------------

    def rng(self, stream: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + stream)

    def first_turn(self, rng: random.Random) -> tuple[Messages, int]:
        """A fresh one-message conversation and the prompt length it was made for."""
        tokens = self.workload.prompt.sample(rng)
        words = self.calibration.words_for(tokens)
        return [{"role": "user", "content": words_text(rng, words)}], tokens

    def follow_up(self, rng: random.Random) -> tuple[dict[str, str], int]:
        tokens = self.workload.prompt.sample(rng)
        words = self.calibration.message_words(tokens)
        return {"role": "user", "content": words_text(rng, words)}, tokens

    def new_record(self, scheduled: float, **fields: object) -> RequestRecord | None:
        """A record for a request due at `scheduled`, or None once the run is over."""
        if self.stop.is_set():
            return None
        if scheduled >= self.stop_at:
            self.halt("duration")
            return None
        warmup = scheduled < self.warmup_end
        if not warmup:
            if self.measured >= self.bounds.max_requests:
                self.halt("requests")
                return None
            self.measured += 1
        output = self.workload.output.sample(self.rng(len(self.records) + 7_919))
        record = RequestRecord(
            id=len(self.records),
            scheduled=scheduled,
            output_tokens_target=output,
            warmup=warmup,
            **fields,  # type: ignore[arg-type]
        )
        self.records.append(record)
        return record

    async def send(self, record: RequestRecord, messages: Messages, keep_text: bool) -> None:
        body = self.client.body(
            self.target, messages, record.output_tokens_target, self.workload.ignore_eos
        )
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.bounds.request_timeout_s):
                await self.client.stream(record, body, keep_text)
        except TimeoutError:
            record.fail("timeout", f"no complete answer within {self.bounds.request_timeout_s} s")
        finally:
            self.in_flight -= 1

    async def sleep_until(self, when: float) -> bool:
        """Wait until `when` (perf_counter); False as soon as the run stops."""
        delay = when - time.perf_counter()
        if delay > 0 and not self.stop.is_set():
            # asyncio.wait on a plain future costs no task, unlike wait_for(event.wait()):
            # this runs once per arrival, hundreds of times a second.
            await asyncio.wait((self._stopped,), timeout=delay)
        return not self.stop.is_set()

    def halt(self, reason: StopReason) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stopped_at = time.perf_counter()
            self.stop.set()
            self._stopped.set_result(None)

    # -- the run --------------------------------------------------------------------------

    async def execute(
        self, drive: Callable[[Run], Awaitable[None]], interrupt: asyncio.Event | None = None
    ) -> RunResult:
        """Run `drive(self)` until the duration, the request cap, or `interrupt`."""
        self.t0 = time.perf_counter()
        self.warmup_end = self.t0 + self.bounds.warmup_s
        self.stop_at = self.warmup_end + self.bounds.duration_s
        driver: asyncio.Future[None] = asyncio.ensure_future(drive(self))
        waits: set[asyncio.Future[Any]] = {driver}
        waits.add(asyncio.ensure_future(asyncio.sleep(self.stop_at - time.perf_counter())))
        waits.add(asyncio.ensure_future(self.stop.wait()))
        if interrupt is not None:
            waits.add(asyncio.ensure_future(interrupt.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits - {driver}:
            w.cancel()
        if interrupt is not None and interrupt.is_set():
            self.interrupted = True
            self.halt("interrupted")
        self.halt("duration" if not driver.done() else self.reason)
        if self.reason == "duration" and self.stopped_at is not None:
            # A timer may wake a hair early; a run bounded by its duration lasted all of it.
            self.stopped_at = max(self.stopped_at, self.stop_at)
        if not driver.done() and not self.interrupted:
            # Requests in flight may finish, for `grace_s` or until a Ctrl-C.
            grace: set[asyncio.Future[Any]] = {driver}
            if interrupt is not None:
                grace.add(asyncio.ensure_future(interrupt.wait()))
            await asyncio.wait(
                grace, timeout=self.bounds.grace_s, return_when=asyncio.FIRST_COMPLETED
            )
            for w in grace - {driver}:
                w.cancel()
            self.interrupted = interrupt is not None and interrupt.is_set()
        if not driver.done():
            driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
        for record in self.records:
            if record.status == "incomplete" and record.error_type is None:
                record.error_type = "cancelled"
        assert self.stopped_at is not None
        return RunResult(
            load=self.load,
            records=self.records,
            t0=self.t0,
            warmup_end=self.warmup_end,
            stop_at=self.stop_at,
            stopped_at=self.stopped_at,
            finished_at=time.perf_counter(),
            reason=self.reason,
            interrupted=self.interrupted,
        )
