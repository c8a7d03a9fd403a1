"""OpenTelemetry traces and metrics in the GenAI semantic conventions (docs/observability.md).

Off by default: without `telemetry.otlp_endpoint` the tracer and meter are OpenTelemetry's
no-op ones, so nothing is recorded and nothing leaves the machine. With an endpoint, spans go
through a BatchSpanProcessor and metrics through a periodic reader, both to the OTLP/HTTP
(protobuf) exporter. The providers are this app's own, never the process-wide globals: FastAPI
gets them through its `telemetry` config (its HTTP spans are the parents of ours), and two apps
in one process (the tests) do not share a pipeline.

Spans and metrics carry names, counts and times only: never a prompt or an answer, whatever
the tenant's content policy, and never the user (the tenant's name stands for the caller).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sovllm import __version__
from sovllm.engines.base import GenerationOutput, SamplingParams, Timings
from sovllm.observability.deferred_metrics import DeferredMeterProvider, MeasurementQueue
from sovllm.observability.span_records import RecordedSpan, RecordsTracerProvider, SpanRecords

SEMCONV_VERSION = "1.44.0"
"""The semantic conventions pinned (GenAI's are "Development"): the schema FastAPI's HTTP spans
use too, so one trace speaks one version."""
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# The GenAI conventions' bucket boundaries (gen-ai-metrics.md of the pinned version).
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01, 0.02, ... 81.92
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

PROVIDER = "sovllm"
PROBES = frozenset({"/health", "/ready", "/metrics", "/v1/engine/info"})
"""Paths the pool and Prometheus poll: no spans (the worker's info path is pool/wire.py's)."""
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class ExportSettings:
    """Where telemetry goes: an OTLP/HTTP base URL (`/v1/traces`, `/v1/metrics` appended)."""

    endpoint: str
    service_name: str = "sovllm"
    sample_ratio: float = 1.0


class Telemetry:
    """One app's tracer and GenAI instruments, and the providers behind them."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        meter_provider: metrics.MeterProvider,
        shutdown: Callable[[], None] = lambda: None,
        records: SpanRecords | None = None,
    ) -> None:
        self.tracer_provider, self.meter_provider = tracer_provider, meter_provider
        self.enabled = not isinstance(tracer_provider, trace.NoOpTracerProvider)
        self._shutdown = shutdown
        self.records = records
        """Where the request spans go (span_records.py); None: they are not recorded."""
        self.tracer = tracer_provider.get_tracer("sovllm", __version__, schema_url=SCHEMA_URL)
        meter = meter_provider.get_meter("sovllm", __version__, schema_url=SCHEMA_URL)
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Time to generate the first token.",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
        )
        self.tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token",
            unit="s",
            description="Time per output token after the first.",
            explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.server.request.duration",
            unit="s",
            description="Generative AI server request duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )

    def fastapi(self, probes: frozenset[str] = PROBES) -> TelemetryConfig:
        """FastAPI's own HTTP telemetry on these providers. Its log records are off: they carry
        exception messages, which can quote a request; the environment never turns export on
        (`auto_configure`): only `telemetry.otlp_endpoint` does, past the egress check. The
        `probes` paths (health checks, scrapes: several a second) make no spans. FastAPI's
        operation spans (`fastapi.dependencies`, `fastapi.endpoint`) are off: two spans a
        request that say nothing the HTTP span and the GenAI span below it do not."""

        def probe(scope: MutableMapping[str, Any]) -> bool:
            return scope.get("path") in probes

        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
            "exclude": probe,
        }

    def shutdown(self) -> None:
        """Export what is buffered, then stop (the app's shutdown)."""
        self._shutdown()


def disabled() -> Telemetry:
    """The default: no-op providers, nothing recorded, nothing sent."""
    return Telemetry(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())


def exporting(settings: ExportSettings) -> Telemetry:
    """Spans and metrics exported over OTLP/HTTP to `settings.endpoint`. Spans are records
    (span_records.py) and metric measurements are queued (deferred_metrics.py): what a
    request pays for its telemetry on the event loop is a few dict and deque operations; the
    SDK's aggregation, encoding and export run on its threads."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from sovllm.observability.otlp_spans import SpanExporter

    base = settings.endpoint.rstrip("/")
    resource = Resource.create({"service.name": settings.service_name})
    sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
    spans = BatchSpanProcessor(SpanExporter(f"{base}/v1/traces"))
    scope = InstrumentationScope("sovllm", __version__, SCHEMA_URL)
    records = SpanRecords(spans, resource, scope, sampler)
    queue = MeasurementQueue()
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(f"{base}/v1/metrics"))
    # No exemplars: the default filter offers every measurement taken under a sampled span to
    # a reservoir, a sixth of a histogram record's cost, for trace links nothing here reads.
    sdk_meters = MeterProvider(
        [reader],
        resource=resource,
        shutdown_on_exit=False,
        exemplar_filter=AlwaysOffExemplarFilter(),
    )

    def shutdown() -> None:
        spans.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
        queue.close()
        sdk_meters.shutdown()

    return Telemetry(
        RecordsTracerProvider(records),
        DeferredMeterProvider(sdk_meters, queue),
        shutdown,
        records,
    )


def traceparent() -> dict[str, str]:
    """The W3C `traceparent` of the current span, for a request to a replica (else nothing)."""
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers)
    return headers


class _Clock:
    """Engine times (time.perf_counter seconds) as the epoch nanoseconds spans take."""

    def __init__(self) -> None:
        self.wall, self.perf = time.time_ns(), time.perf_counter()

    def ns(self, perf: float) -> int:
        return self.wall - round((self.perf - perf) * 1e9)


def timing_spans(tracer: trace.Tracer, parent: Span, timings: Timings | None) -> None:
    """Queue wait, prefill and decode as children of `parent`, after the fact, from the
    engine's clock: the engine does not know the trace, and needs not."""
    if timings is None:
        return
    clock, ctx = _Clock(), trace.set_span_in_context(parent)
    for name, start, end in _phases(timings):
        span = tracer.start_span(name, ctx, start_time=clock.ns(start))
        span.end(end_time=clock.ns(end))


def _phases(timings: Timings) -> Iterator[tuple[str, float, float]]:
    """Queue wait, prefill and decode, those the engine's clock saw begin and end."""
    prefill_from = timings.scheduled if timings.scheduled is not None else timings.arrival
    phases = (
        ("queue wait", timings.arrival, timings.scheduled),
        ("prefill", prefill_from, timings.first_token),
        ("decode", timings.first_token, timings.finished),
    )
    for name, start, end in phases:
        if start is not None and end is not None:
            yield name, start, end


@dataclass
class RequestTrace:
    """One request's span (`chat {model}` or `text_completion {model}`), its children and its
    GenAI metrics. Created at admission; `end()` closes it once the audit's end is written.
    The spans are records (span_records.py), not SDK spans: cheap on the request path."""

    telemetry: Telemetry
    span: RecordedSpan
    attributes: dict[str, Any]
    """What the metrics carry: operation and models (low cardinality, no tenant)."""
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def current(self) -> Iterator[None]:
        """The request span as the current one: `traceparent()` and log lines see it."""
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            yield
        finally:
            otel_context.detach(token)

    @contextmanager
    def child(self, name: str) -> Iterator[None]:
        """A child span around the block (an exception passes through, unrecorded: its
        message may quote the request)."""
        records = self.telemetry.records
        if records is None or not self.span.context.trace_flags.sampled:
            yield
            return
        start = time.time_ns()
        try:
            yield
        finally:
            records.child(self.span.context, name, start, time.time_ns())

    def admitted(self, request_id: str, model: str, tenant: str, replica: str | None) -> None:
        self.attributes["gen_ai.response.model"] = model
        a = self.span.attributes
        a["gen_ai.response.id"] = request_id
        a["gen_ai.response.model"] = model
        a["sovllm.tenant"] = tenant
        if replica is not None:
            a["sovllm.replica"] = replica

    def refused(self, exc: BaseException) -> None:
        """Admission refused: the span ends in error, naming the refusal's type only (its
        message may quote the request)."""
        self._error(type(exc).__name__)
        attributes = dict(self.attributes)
        # A model that is not served: one series, whatever a client asked for.
        if "gen_ai.response.model" not in attributes:
            attributes["gen_ai.request.model"] = "_OTHER"
        self.telemetry.duration.record(time.perf_counter() - self.started, attributes)
        self.span.end()

    def _error(self, kind: str) -> None:
        self.attributes["error.type"] = kind
        self.span.attributes["error.type"] = kind
        self.span.set_error()

    def end(self, out: GenerationOutput | None, outcome: str, audit_write: Future[int]) -> None:
        """Usage, finish reason, the engine's phases and the metrics; the audit write is the
        last child, and the request's span ends when that entry is written."""
        t, span = self.telemetry, self.span
        if out is not None:
            a = span.attributes
            a["gen_ai.usage.input_tokens"] = out.prompt_tokens
            a["gen_ai.usage.output_tokens"] = out.completion_tokens
            a["gen_ai.response.finish_reasons"] = [out.finish_reason or "error"]
            a["sovllm.prefix_cached_tokens"] = out.cached_tokens
            _observe(t, self.attributes, out)
        if outcome != "completed":
            span.attributes["sovllm.outcome"] = outcome
        if outcome == "error" or (out is not None and out.error):
            self._error("engine_error" if out is not None and out.error else outcome)
        t.duration.record(time.perf_counter() - self.started, self.attributes)
        records = t.records
        if records is None or not span.context.trace_flags.sampled:
            return
        if out is not None and out.timings is not None:
            clock = _Clock()
            for name, start, end in _phases(out.timings):
                records.child(span.context, name, clock.ns(start), clock.ns(end))
        write_start = time.time_ns()

        def written(_: object) -> None:
            records.child(span.context, "audit write", write_start, time.time_ns())
            span.end()

        audit_write.add_done_callback(written)


def _observe(t: Telemetry, attributes: Mapping[str, Any], out: GenerationOutput) -> None:
    timings = out.timings
    if timings is not None and timings.first_token is not None:
        t.ttft.record(max(0.0, timings.first_token - timings.arrival), attributes)
        if timings.finished is not None and out.completion_tokens > 1:
            per_token = (timings.finished - timings.first_token) / (out.completion_tokens - 1)
            t.tpot.record(max(0.0, per_token), attributes)
    t.tokens.record(out.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
    t.tokens.record(out.completion_tokens, {**attributes, "gen_ai.token.type": "output"})


def start_request(
    telemetry: Telemetry, chat: bool, model: str, sampling: SamplingParams
) -> RequestTrace:
    """The request's span, a child of the current one (FastAPI's HTTP span)."""
    operation = "chat" if chat else "text_completion"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
    }
    span_attributes = {
        **attributes,
        "gen_ai.request.temperature": sampling.temperature,
        "gen_ai.request.top_p": sampling.top_p,
    }
    if sampling.max_tokens is not None:
        span_attributes["gen_ai.request.max_tokens"] = sampling.max_tokens
    records = telemetry.records
    if records is None:
        return RequestTrace(telemetry, RecordedSpan(None), attributes)
    span = records.start(f"{operation} {model}", span_attributes)
    return RequestTrace(telemetry, span, attributes)


def engine_span(telemetry: Telemetry, model: str, out: GenerationOutput) -> None:
    """A worker's span of one request in its engine, a child of the current one (its HTTP
    span, itself the child of the gateway's request span through `traceparent`)."""
    timings = out.timings
    if not telemetry.enabled or timings is None or timings.finished is None:
        return
    clock = _Clock()
    span = telemetry.tracer.start_span(
        f"engine {model}",
        start_time=clock.ns(timings.arrival),
        attributes={
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": out.prompt_tokens,
            "gen_ai.usage.output_tokens": out.completion_tokens,
            "gen_ai.response.finish_reasons": [out.finish_reason or "error"],
            "sovllm.prefix_cached_tokens": out.cached_tokens,
        },
    )
    timing_spans(telemetry.tracer, span, timings)
    span.end(end_time=clock.ns(timings.finished))
