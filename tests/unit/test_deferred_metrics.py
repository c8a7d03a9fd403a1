"""Metric measurements queued on the request path reach the SDK's instruments unchanged."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from sovllm.observability.deferred_metrics import DeferredMeterProvider, MeasurementQueue
from tests.conftest import wait_until

BOUNDS = (0.1, 1.0, 10.0)


def _points(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Each metric's data points as comparable values: attributes to (count, sum, buckets)
    for histograms, to the value for sums."""
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points: dict[frozenset[tuple[str, str]], Any] = {}
                for p in m.data.data_points:
                    key = frozenset((k, str(v)) for k, v in (p.attributes or {}).items())
                    if isinstance(p, HistogramDataPoint):
                        points[key] = (p.count, p.sum, tuple(p.bucket_counts))
                    elif isinstance(p, NumberDataPoint):
                        points[key] = p.value
                out[m.name] = points
    return out


def _record(provider: Any, attributes: dict[str, Any]) -> None:
    meter = provider.get_meter("test", "1")
    latency = meter.create_histogram("latency", "s", explicit_bucket_boundaries_advisory=BOUNDS)
    active = meter.create_up_down_counter("active")
    tokens = meter.create_counter("tokens")
    for i, value in enumerate((0.05, 0.5, 5.0, 50.0, 0.5)):
        active.add(1, attributes)
        latency.record(value, {**attributes, "n": i % 2})
        tokens.add(i, {"kind": ["a", "list"]} if i == 4 else {"kind": "input"})
        active.add(-1, attributes)
    attributes["changed"] = "after the calls"  # the caller's dict, reused (as FastAPI does)


def test_queued_measurements_are_what_the_sdk_would_have_recorded() -> None:
    direct = InMemoryMetricReader()
    _record(MeterProvider([direct]), {"route": "/v1/chat"})
    deferred = InMemoryMetricReader()
    queue = MeasurementQueue(interval=3600)  # drained by hand below
    try:
        _record(DeferredMeterProvider(MeterProvider([deferred]), queue), {"route": "/v1/chat"})
        assert _points(deferred) == {}  # nothing applied yet
        queue.drain()
        expected = _points(direct)
        assert _points(deferred) == expected
        assert expected["active"] == {frozenset({("route", "/v1/chat")}): 0}
        assert sum(c for c, _, _ in expected["latency"].values()) == 5
        assert sorted(expected["tokens"].values()) == [4, 6]
    finally:
        queue.close()


def test_the_thread_applies_the_queue_and_close_drains_the_rest() -> None:
    reader = InMemoryMetricReader()
    queue = MeasurementQueue(interval=0.01)
    counter = (
        DeferredMeterProvider(MeterProvider([reader]), queue).get_meter("t").create_counter("c")
    )
    counter.add(2)
    wait_until(lambda: _points(reader).get("c") == {frozenset(): 2}, "the queue applied", 10)
    queue.close()
    counter.add(3)  # after close: still applied by a last drain
    queue.drain()
    assert _points(reader)["c"] == {frozenset(): 5}
