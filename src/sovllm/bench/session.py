"""A whole `sovllm bench` invocation: discover, calibrate prompts, run one level, a sweep or a
capacity search, and hand back everything the report needs. Ctrl-C stops the current run at
once and keeps what was measured."""

from __future__ import annotations

import asyncio
import gc
import math
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sovllm.bench import capacity as cap
from sovllm.bench import energy
from sovllm.bench.client import BenchClient, Target
from sovllm.bench.config import RunBounds, Workload
from sovllm.bench.metrics import summarise
from sovllm.bench.prompts import Calibration, calibrate
from sovllm.bench.runner import Run, RunResult
from sovllm.bench.workload import driver_for
from sovllm.planner.slo import SLO
from sovllm.planner.workload import Load

if TYPE_CHECKING:
    from sovllm.bench.soak import SoakPlan

Mode = Literal["single", "sweep", "capacity"]


class UI(Protocol):
    def message(self, text: str) -> None: ...

    def live(self, run: Run, label: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class Options:
    url: str
    api_key: str | None
    model: str | None
    load: Load
    workload: Workload
    bounds: RunBounds
    slo: SLO
    mode: Mode = "single"
    levels: tuple[float, ...] = ()
    capacity_ceiling: float = 1024.0
    soak: SoakPlan | None = None
    """With `--soak`: the admin actor and the sampler that run beside the users."""


@dataclass
class Level:
    label: str
    value: float
    result: RunResult
    summary: dict[str, Any]


@dataclass
class Session:
    options: Options
    started_at: str
    target: Target | None = None
    calibration: Calibration | None = None
    levels: list[Level] = field(default_factory=list)
    sweep: dict[str, Any] | None = None
    capacity: dict[str, Any] | None = None
    interrupted: bool = False
    finished_at: str = ""
    compare_plan: dict[str, Any] | None = None
    soak: dict[str, Any] | None = None

    @property
    def main(self) -> Level | None:
        """The level the headline summary is about."""
        if not self.levels:
            return None
        if self.capacity and self.capacity.get("best") is not None:
            best = self.capacity["best"]
            return next((lv for lv in self.levels if lv.value == best), self.levels[-1])
        return self.levels[-1]


class _Interrupted(Exception):
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _pool(load: Load, mode: Mode, ceiling: float, levels: tuple[float, ...]) -> int | None:
    """Connections needed at the peak: None (unbounded) for an uncapped open loop."""
    top = load.value
    if mode == "capacity":
        top = max(top, ceiling)
    elif mode == "sweep" and levels:
        top = max(levels)
    if load.kind in ("users", "concurrency"):
        return int(top)
    if load.kind == "rate" and load.max_concurrency:
        return load.max_concurrency
    return None


@contextmanager
def _sigint(event: asyncio.Event) -> Iterator[None]:
    """First Ctrl-C: stop and write what was measured. Second: the default (KeyboardInterrupt)."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        event.set()
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, first)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        installed = False
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


async def execute(options: Options, ui: UI, session: Session) -> Session:
    """Fill `session` as it goes, so that a crash or Ctrl-C still leaves a partial report."""
    o = options
    pool = _pool(o.load, o.mode, o.capacity_ceiling, o.levels)
    interrupt = asyncio.Event()
    async with BenchClient(o.url, o.api_key, pool, o.bounds.request_timeout_s) as client:
        target = await client.discover(o.model)
        session.target = target
        method = "tokenize" if target.tokenize_url else "usage"

        async def count(messages: list[dict[str, str]]) -> int:
            return await client.count_tokens(target, messages)

        calibration = await calibrate(count, method, o.workload.seed)
        session.calibration = calibration
        # As vLLM's benchmark does: what exists now is never collected, so the collector's
        # pauses during the run stay short and out of the latencies.
        gc.collect()
        gc.freeze()
        if o.workload.prompt.lo < calibration.overhead + 1:
            ui.message(
                f"note: the chat template alone takes {calibration.overhead:g} tokens, so "
                f"prompts shorter than {calibration.overhead + 1:g} tokens cannot be exact"
            )
        elif not calibration.exact:
            ui.message(
                f"note: the server's tokenizer splits the prompt words ({calibration.slope:.3f} "
                "tokens/word); prompt lengths are approximate and checked against usage"
            )

        async def probe(value: float) -> cap.Outcome:
            load = replace(o.load, value=value)
            label = load.describe()
            run = Run(client, target, o.workload, load, o.bounds, calibration, o.workload.seed)
            joules_before = await energy.scrape(o.url, o.api_key)
            with ui.live(run, label):
                soak = o.soak.start(run) if o.soak is not None else None
                result = await run.execute(driver_for(load), interrupt)
                if soak is not None:
                    session.soak = await soak.finish(result)
            summary = summarise(result, o.slo)
            joules_after = await energy.scrape(o.url, o.api_key)
            used = energy.summarise(joules_before, joules_after, result.records)
            if used is not None:
                summary["energy"] = used
            session.levels.append(Level(label, value, result, summary))
            if result.interrupted:
                session.interrupted = True
                raise _Interrupted
            return cap.Outcome(value, bool(summary["slo"]["met"]), summary)

        with _sigint(interrupt):
            try:
                if o.mode == "single":
                    await probe(o.load.value)
                elif o.mode == "sweep":
                    levels = list(o.levels) or cap.sweep_levels(o.load)
                    session.sweep = {"levels": levels, "stopped": "interrupted"}
                    _, why = await cap.sweep(probe, o.load, levels, o.slo)
                    session.sweep["stopped"] = why
                else:
                    integer = o.load.kind != "rate"
                    floor = 1.0 if integer else min(0.05, o.load.value)
                    session.capacity = {"best": None, "limited_by": "interrupted"}
                    found = await cap.search(
                        probe, o.load.value, integer, floor, max(o.capacity_ceiling, floor)
                    )
                    line = cap.capacity_line(found.best, o.load, o.slo, floor)
                    session.capacity = found.as_json() | {"line": line}
            except _Interrupted:
                pass
    session.finished_at = _now()
    return session


def run_loop(options: Options, ui: UI, session: Session) -> None:
    """Run `execute` on uvloop when it is installed (uvicorn[standard] brings it): its loop costs
    the client less CPU per request, which is what keeps the client out of the measurement."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(execute(options, ui, session))
    finally:
        gc.unfreeze()


def new_session(options: Options) -> Session:
    return Session(options=options, started_at=_now())


def finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
