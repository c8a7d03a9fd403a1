"""Energy per request: a counter read around each engine step, or over requests in flight.

Two ways to attribute a counter's joules, one meter for both:
- **per step** (an engine in this process, which calls `step_started()` and `step_finished()`
  around each llama_decode): the step's joules are shared among its sequences in proportion to
  the tokens each processed (a prefill chunk, or one decode token);
- **in flight** (replicas behind HTTP, whose steps the gateway cannot see): the gateway notes
  each request's tokens as its outputs arrive (`tokens()`), and whenever a request ends the
  joules since the last reading, less what engine steps took meanwhile, are shared among the
  requests then in flight by the tokens each got since that reading.
The gateway takes a request's joules once, when it ends (`finish()`). The meter never raises
into the engine thread or the request path: a counter that fails is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sovllm.observability.energy.counters import EnergyCounter, EnergyUnavailable
from sovllm.observability.energy.split import co2e_grams, split_by_tokens

log = logging.getLogger("sovllm.energy")

_KEEP = 4096
"""Requests' step joules kept for the gateway to take; past this the oldest are dropped (a
request the gateway never ends, e.g. one a test drives on the engine directly)."""


@dataclass(frozen=True)
class Energy:
    """One request's energy: joules, where they were read (`measured:rapl|nvml|dcgm` or
    `estimated`) and grams of CO2e (None without `energy.grid_kg_per_kwh`)."""

    joules: float
    source: str
    co2e_g: float | None


@dataclass
class _Flight:
    joules: float = 0.0
    pending: int = 0
    """Tokens since the last in-flight reading."""


class EnergyMeter:
    def __init__(self, counter: EnergyCounter | None, grid_kg_per_kwh: float | None) -> None:
        self._counter = counter
        self._grid = grid_kg_per_kwh
        self._lock = threading.Lock()
        self._step_start: float | None = None
        self._stepped: dict[str, float] = {}
        self._stepped_since = 0.0
        self._flights: dict[str, _Flight] = {}
        self._last: float | None = None
        self._failing = False
        self.totals: dict[tuple[str, str, str], float] = defaultdict(float)
        """Joules by (tenant, model, source), for /metrics."""

    @property
    def source(self) -> str | None:
        return self._counter.source if self._counter is not None else None

    def close(self) -> None:
        if self._counter is not None:
            self._counter.close()

    def _read(self) -> float | None:
        if self._counter is None:
            return None
        try:
            value = self._counter.read()
        except EnergyUnavailable as exc:
            # A counter that cannot be read (a zone gone, permissions changed) leaves the
            # step or the interval unattributed rather than failing requests; logged once.
            if not self._failing:
                log.error("energy counter unreadable: %s; energy is not attributed", exc)
            self._failing = True
            return None
        if self._failing:
            log.warning("energy counter readable again")
            self._failing = False
        return value

    # -- the engine's step observer (engines/base.py StepObserver), on the engine thread ---

    def step_started(self) -> None:
        with self._lock:
            self._step_start = self._read()

    def step_finished(self, tokens: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            start, self._step_start = self._step_start, None
            end = self._read()
            if start is None or end is None:
                return
            per_request: dict[str, int] = defaultdict(int)
            for request_id, n in tokens:
                per_request[request_id] += n
            joules = end - start
            self._stepped_since += joules
            for request_id, share in split_by_tokens(joules, per_request).items():
                self._stepped[request_id] = self._stepped.get(request_id, 0.0) + share
            while len(self._stepped) > _KEEP:
                del self._stepped[next(iter(self._stepped))]

    # -- the gateway ----------------------------------------------------------------------

    def tokens(self, request_id: str, n: int) -> None:
        """A request's outputs brought `n` more tokens (its prompt's, with the first)."""
        if self._counter is None:
            return
        with self._lock:
            flight = self._flights.get(request_id)
            if flight is None:
                if not self._flights:
                    # Nothing was in flight: what the counter advanced since is nobody's.
                    self._last, self._stepped_since = self._read(), 0.0
                flight = self._flights[request_id] = _Flight()
            flight.pending += n

    def finish(self, request_id: str, tenant: str, model: str) -> Energy | None:
        """The request ended: its joules (None when the meter is off or it never ran)."""
        if self._counter is None:
            return None
        with self._lock:
            self._share_in_flight()
            flight = self._flights.pop(request_id, None)
            joules = self._stepped.pop(request_id, None)
            if joules is None:
                if flight is None or self._failing:  # unread joules are not 0
                    return None
                joules = flight.joules
            source = self._counter.source
            self.totals[(tenant, model, source)] += joules
        co2e = co2e_grams(joules, self._grid) if self._grid is not None else None
        return Energy(joules, source, co2e)

    def _share_in_flight(self) -> None:
        """Share the joules since the last reading among the requests in flight whose engine
        steps are not seen here (lock held)."""
        now = self._read()
        if now is None or self._last is None:
            self._last = now
            return
        joules = max(0.0, now - self._last - self._stepped_since)
        self._last, self._stepped_since = now, 0.0
        unseen = {rid: f for rid, f in self._flights.items() if rid not in self._stepped}
        shares = split_by_tokens(joules, {rid: f.pending for rid, f in unseen.items()})
        for rid, share in shares.items():
            unseen[rid].joules += share
            unseen[rid].pending = 0


def disabled() -> EnergyMeter:
    """A meter that records nothing (`energy.source: off`, and tests' apps)."""
    return EnergyMeter(None, None)
