"""OpenTelemetry metric instruments whose measurements are applied off the request path.

Recording into an SDK histogram or counter cleans and hashes the attributes, finds the series
under a lock and updates its buckets: about 10 microseconds here on a quiet machine, several
times that under load, and a traced request takes eight of them (FastAPI's `http.server.*`
three, the GenAI layer's five), on the event loop.
Here a measurement is a tuple appended to a queue, and a thread applies the queue to the SDK's
instruments every quarter second (and at shutdown, before the last export): a measurement
reaches an export at most that much later. Only synchronous instruments that
add up (counters, up-down counters, histograms) are deferred: their result does not depend on
the order measurements are applied in. Gauges and observable instruments go to the SDK as they
are. Exemplars are off (tracing.py), so a measurement's context is not carried.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackT
from opentelemetry.util.types import Attributes

Measure = Callable[[float, Attributes], None]
DRAIN_SECONDS = 0.25


class MeasurementQueue:
    """Measurements waiting for their instrument, and the thread that applies them."""

    def __init__(self, interval: float = DRAIN_SECONDS) -> None:
        self._pending: deque[tuple[Measure, float, Attributes, bool]] = deque()
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="sovllm-metrics", daemon=True)
        self._thread.start()

    def put(self, measure: Measure, amount: float, attributes: Attributes, sums: bool) -> None:
        """`sums`: the instrument is a counter, whose measurements of one series may be added
        up before they are applied (FastAPI's active-requests counter goes +1 and -1 for each
        request: one update instead of two)."""
        # A copy: the caller may change its dict after the call (FastAPI reuses its own).
        self._pending.append((measure, amount, dict(attributes) if attributes else None, sums))

    def drain(self) -> None:
        """Apply every measurement queued so far (safe from several threads: each is popped
        once)."""
        pending = self._pending
        totals: dict[tuple[Measure, frozenset[tuple[str, Any]]], float] = {}
        for _ in range(len(pending)):  # what is queued now: a busy producer cannot hold it
            try:
                measure, amount, attributes, sums = pending.popleft()
            except IndexError:  # another thread drained it first
                break
            if sums:
                try:
                    key = (measure, frozenset((attributes or {}).items()))
                except TypeError:  # a list among the values: not hashable, applied as is
                    pass
                else:
                    totals[key] = totals.get(key, 0) + amount
                    continue
            measure(amount, attributes)
        for (counter, series), total in totals.items():
            counter(total, dict(series) or None)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.drain()


class _Queued:
    _sums = True

    def __init__(self, queue: MeasurementQueue, measure: Measure) -> None:
        self._queue, self._measure = queue, measure

    def _put(self, amount: float, attributes: Attributes) -> None:
        self._queue.put(self._measure, amount, attributes, self._sums)


class _Counter(_Queued, metrics.Counter):
    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        self._put(amount, attributes)


class _UpDownCounter(_Queued, metrics.UpDownCounter):
    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        self._put(amount, attributes)


class _Histogram(_Queued, metrics.Histogram):
    _sums = False

    def record(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        self._put(amount, attributes)


class DeferredMeter(metrics.Meter):
    """An SDK meter whose additive synchronous instruments are queued."""

    def __init__(self, meter: metrics.Meter, queue: MeasurementQueue) -> None:
        super().__init__(meter.name, meter.version, meter.schema_url)
        self._meter, self._queue = meter, queue

    def create_counter(self, name: str, unit: str = "", description: str = "") -> metrics.Counter:
        real = self._meter.create_counter(name, unit, description)
        return _Counter(self._queue, real.add)

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> metrics.UpDownCounter:
        real = self._meter.create_up_down_counter(name, unit, description)
        return _UpDownCounter(self._queue, real.add)

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> metrics.Histogram:
        real = self._meter.create_histogram(
            name,
            unit,
            description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
        )
        return _Histogram(self._queue, real.record)

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> metrics._Gauge:
        return self._meter.create_gauge(name, unit, description)

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableCounter:
        return self._meter.create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableGauge:
        return self._meter.create_observable_gauge(name, callbacks, unit, description)

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableUpDownCounter:
        return self._meter.create_observable_up_down_counter(name, callbacks, unit, description)


class DeferredMeterProvider(metrics.MeterProvider):
    """The SDK's meter provider, its additive instruments queued."""

    def __init__(self, provider: metrics.MeterProvider, queue: MeasurementQueue) -> None:
        self.provider, self.queue = provider, queue

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> metrics.Meter:
        meter = self.provider.get_meter(name, version, schema_url, attributes)
        return DeferredMeter(meter, self.queue)
