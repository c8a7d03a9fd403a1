"""Prometheus metrics with vLLM's names under the `sovllm:` prefix."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from sovllm.engines.base import EngineStats, GenerationOutput

# vLLM's buckets, so dashboards built for vLLM read sovllm the same way.
TTFT_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0),
    *(2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0),
)
ITL_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0),
    *(2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
)
E2E_BUCKETS = (
    *(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0),
    *(50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0),
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# vLLM drops the *_created series too: they double the scrape for no dashboard use.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """Request metrics labelled by model, and the engines' gauges and counters read at scrape."""

    def __init__(self, models: Sequence[str], stats: Callable[[str], EngineStats]) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, registry=r, buckets=buckets)

        self._ttft = histogram(
            "sovllm:time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            TTFT_BUCKETS,
        )
        self._itl = histogram(
            "sovllm:inter_token_latency_seconds",
            "Time between consecutive generated tokens of one request.",
            ITL_BUCKETS,
        )
        self._tpot = histogram(
            "sovllm:time_per_output_token_seconds",
            "Mean time per output token after the first, per request (vLLM's TPOT).",
            ITL_BUCKETS,
        )
        self._e2e = histogram(
            "sovllm:e2e_request_latency_seconds",
            "Time from arrival to the last token.",
            E2E_BUCKETS,
        )
        self._queue = histogram(
            "sovllm:request_queue_time_seconds", "Time a request waited for a slot.", E2E_BUCKETS
        )
        self._prompt = Counter(
            "sovllm:prompt_tokens", "Prompt tokens processed.", labels, registry=r
        )
        self._generation = Counter(
            "sovllm:generation_tokens", "Tokens generated.", labels, registry=r
        )
        self._success = Counter(
            "sovllm:request_success",
            "Requests that finished, by finish reason.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self._errors = Counter(
            "sovllm:request_errors",
            "Error answers, by HTTP status and OpenAI error code (quota refusals: 429 with a "
            "quota's code; stops: 503 service_stopped).",
            ["status", "code"],
            registry=r,
        )
        labelled = (
            self._ttft,
            self._itl,
            self._tpot,
            self._e2e,
            self._queue,
            self._prompt,
            self._generation,
        )
        for name in models:  # every model's series exist from the start, at zero
            for family in labelled:
                family.labels(name)
        # Observed for every token on the event loop: `labels()` (a lock, a tuple, a lookup)
        # once per model, not per token.
        self._itl_of = {name: self._itl.labels(name) for name in models}
        r.register(_EngineCollector(models, stats))

    def observe_token(self, model: str, previous: float | None, out: GenerationOutput) -> None:
        """Called for every output that carries a token; `previous` is the last token's time."""
        if previous is not None and out.token_ids:
            itl = self._itl_of.get(model) or self._itl.labels(model)
            itl.observe(max(out.time - previous, 0.0))

    def observe_finished(self, model: str, out: GenerationOutput) -> None:
        t = out.timings
        if t is None:
            return
        if t.first_token is not None:
            self._ttft.labels(model).observe(t.first_token - t.arrival)
        if t.scheduled is not None:
            self._queue.labels(model).observe(t.scheduled - t.arrival)
        if t.finished is not None:
            self._e2e.labels(model).observe(t.finished - t.arrival)
            if t.first_token is not None and out.completion_tokens > 1:
                decode = max(t.finished - t.first_token, 0.0)
                self._tpot.labels(model).observe(decode / (out.completion_tokens - 1))
        self._prompt.labels(model).inc(out.prompt_tokens)
        self._generation.labels(model).inc(out.completion_tokens)
        self._success.labels(model, out.finish_reason or "unknown").inc()

    def observe_error(self, status: int, code: str | None) -> None:
        """Called by the API's error handlers (api/errors.py) for each error answer."""
        self._errors.labels(str(status), code or "none").inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _EngineCollector(Collector):
    """Running and waiting requests, and the prefix cache's counters: they live in the engines."""

    def __init__(self, models: Sequence[str], stats: Callable[[str], EngineStats]) -> None:
        self._models = list(models)
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        labels = ["model_name"]
        running = GaugeMetricFamily(
            "sovllm:num_requests_running", "Requests holding a slot.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "sovllm:num_requests_waiting", "Requests waiting for a slot.", labels=labels
        )
        queries = CounterMetricFamily(
            "sovllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            labels=labels,
        )
        hits = CounterMetricFamily(
            "sovllm:prefix_cache_hits",
            "Prompt tokens found in the prefix cache and reused.",
            labels=labels,
        )
        for name in self._models:
            s = self._stats(name)
            running.add_metric([name], s.running)
            waiting.add_metric([name], s.waiting)
            queries.add_metric([name], s.prefix_cache_queries)
            hits.add_metric([name], s.prefix_cache_hits)
        yield from (running, waiting, queries, hits)
