"""Prometheus metrics with vLLM's names under the `sovllm:` prefix."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from sovllm.engines.base import EngineStats, GenerationOutput

# vLLM's buckets, so dashboards built for vLLM read sovllm the same way.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
               2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
               50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST

# vLLM drops the *_created series too: they double the scrape for no dashboard use.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry
        self._ttft = Histogram(
            "sovllm:time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            labels, registry=r, buckets=TTFT_BUCKETS,
        ).labels(model_name)  # fmt: skip
        self._itl = Histogram(
            "sovllm:inter_token_latency_seconds",
            "Time between consecutive generated tokens of one request.",
            labels, registry=r, buckets=ITL_BUCKETS,
        ).labels(model_name)  # fmt: skip
        self._e2e = Histogram(
            "sovllm:e2e_request_latency_seconds",
            "Time from arrival to the last token.",
            labels, registry=r, buckets=E2E_BUCKETS,
        ).labels(model_name)  # fmt: skip
        self._queue = Histogram(
            "sovllm:request_queue_time_seconds",
            "Time a request waited for a slot.",
            labels, registry=r, buckets=E2E_BUCKETS,
        ).labels(model_name)  # fmt: skip
        self._prompt = Counter(
            "sovllm:prompt_tokens", "Prompt tokens processed.", labels, registry=r
        ).labels(model_name)
        self._generation = Counter(
            "sovllm:generation_tokens", "Tokens generated.", labels, registry=r
        ).labels(model_name)
        self._success = Counter(
            "sovllm:request_success",
            "Requests that finished, by finish reason.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self._model_name = model_name
        running = Gauge(
            "sovllm:num_requests_running", "Requests holding a slot.", labels, registry=r
        )
        running.labels(model_name).set_function(lambda: stats().running)
        waiting = Gauge(
            "sovllm:num_requests_waiting", "Requests waiting for a slot.", labels, registry=r
        )
        waiting.labels(model_name).set_function(lambda: stats().waiting)
        r.register(_PrefixCacheCollector(model_name, stats))

    def observe_token(self, previous: float | None, out: GenerationOutput) -> None:
        """Called for every output that carries a token; `previous` is the last token's time."""
        if previous is not None and out.token_ids:
            self._itl.observe(max(out.time - previous, 0.0))

    def observe_finished(self, out: GenerationOutput) -> None:
        t = out.timings
        if t is None:
            return
        if t.first_token is not None:
            self._ttft.observe(t.first_token - t.arrival)
        if t.scheduled is not None:
            self._queue.observe(t.scheduled - t.arrival)
        if t.finished is not None:
            self._e2e.observe(t.finished - t.arrival)
        self._prompt.inc(out.prompt_tokens)
        self._generation.inc(out.completion_tokens)
        self._success.labels(self._model_name, out.finish_reason or "unknown").inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _PrefixCacheCollector(Collector):
    """The engine's prefix cache counters, read at scrape time: they count in the engine."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self._model_name = model_name
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        for name, doc, value in (
            ("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
             s.prefix_cache_queries),
            ("prefix_cache_hits", "Prompt tokens found in the prefix cache and reused.",
             s.prefix_cache_hits),
        ):  # fmt: skip
            family = CounterMetricFamily(f"sovllm:{name}", doc, labels=["model_name"])
            family.add_metric([self._model_name], value)
            yield family
