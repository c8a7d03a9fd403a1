"""sovllm's span encoder writes the message OpenTelemetry's own encoder writes: both outputs
are parsed by `opentelemetry-proto` and compared, for spans with every kind of field."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from sovllm.observability.otlp_spans import SpanExporter, encode_spans
from tests.otlp_receiver import receiver

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
GATEWAY = Resource.create({"service.name": "sovllm"}, "https://opentelemetry.io/schemas/1.44.0")
WORKER = Resource.create({"service.name": "sovllm-worker", "replica.index": 0})
SOVLLM = InstrumentationScope("sovllm", "0.9", "https://opentelemetry.io/schemas/1.44.0")
FASTAPI = InstrumentationScope("fastapi", "0.165.0", None, {"library.kind": "web"})


def _context(span_id: int, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(0xABCDEF0123456789ABCDEF0123456789, span_id, remote, SAMPLED, state)


def _spans() -> list[ReadableSpan]:
    root = _context(0x1111, remote=True)
    state = TraceState([("vendor", "v1"), ("x", "y")])
    every_value: dict[str, Any] = {
        "text": "caf\u00e9",
        "empty": "",
        "yes": True,
        "no": False,
        "zero": 0,
        "negative": -42,
        "big": 2**62,
        "float": 0.25,
        "float zero": 0.0,
        "bytes": b"\x00\xff",
        "strings": ["stop", ""],
        "ints": (1, -1),
        "floats": [0.5],
        "bools": [True, False],
        "empty list": [],
        "mapping": {"a": 1, "b": ["x"]},
    }
    return [
        ReadableSpan(
            "POST /v1/chat/completions",
            _context(0x2222, state=state),
            root,
            GATEWAY,
            every_value,
            kind=SpanKind.SERVER,
            status=Status(StatusCode.ERROR, "a description"),
            start_time=1_700_000_000_000_000_000,
            end_time=1_700_000_000_500_000_000,
            instrumentation_scope=FASTAPI,
            events=[
                Event("exception", {"exception.type": "ValueError"}, 1_700_000_000_100_000_000),
                Event("bare", None, 5),
            ],
            links=[
                Link(_context(0x3333, remote=True), {"why": "batch"}),
                Link(_context(0x4444)),
            ],
        ),
        ReadableSpan(
            "chat m",
            _context(0x5555),
            _context(0x2222),
            GATEWAY,
            {"gen_ai.response.finish_reasons": ["length"]},
            status=Status(StatusCode.OK),
            start_time=3,
            end_time=4,
            instrumentation_scope=SOVLLM,
        ),
        ReadableSpan(
            "queue wait",
            _context(0x6666),
            _context(0x5555),
            GATEWAY,
            start_time=5,
            end_time=6,
            instrumentation_scope=SOVLLM,
        ),
        ReadableSpan(
            "engine m",
            _context(0x7777),
            None,
            WORKER,
            kind=SpanKind.CLIENT,
            start_time=7,
            end_time=8,
        ),  # no scope at all
        ReadableSpan(
            "", _context(0x8888), None, WORKER, kind=SpanKind.CONSUMER, instrumentation_scope=SOVLLM
        ),  # no name, no times
    ]


def _limited_span() -> ReadableSpan:
    """An SDK span that dropped attributes, events and links (its limits)."""
    exporter = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1)
    provider = TracerProvider(resource=WORKER, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    links = [Link(_context(0x9999)), Link(_context(0xAAAA))]
    span = provider.get_tracer("t").start_span("limited", links=links, kind=SpanKind.PRODUCER)
    for i in range(4):
        span.set_attribute(f"a{i}", i)
        span.add_event(f"e{i}", {"k": i})
    span.end()
    [finished] = exporter.get_finished_spans()
    assert finished.dropped_attributes and finished.dropped_events and finished.dropped_links
    return finished


def test_the_encoding_is_the_sdks_message() -> None:
    spans = [*_spans(), _limited_span()]
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode(spans).SerializeToString())
    assert ours == theirs
    # Not an empty match: two resources, their scopes, and every span.
    assert [len(r.scope_spans) for r in ours.resource_spans] == [2, 3]
    assert sum(len(s.spans) for r in ours.resource_spans for s in r.scope_spans) == len(spans)
    server = ours.resource_spans[0].scope_spans[0].spans[0]
    assert server.flags == 0x300 and server.trace_state == "vendor=v1,x=y"
    assert {a.key: a.value.int_value for a in server.attributes}["negative"] == -42


def test_an_attribute_of_an_invalid_type_is_left_out_as_the_sdk_does() -> None:
    span = ReadableSpan(
        "s",
        _context(1),
        None,
        GATEWAY,
        {"good": 1, "bad": object(), "after": "x"},  # type: ignore[dict-item]
        start_time=1,
        end_time=2,
    )
    ours = ExportTraceServiceRequest.FromString(encode_spans([span]))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode([span]).SerializeToString())
    assert ours == theirs
    [encoded] = ours.resource_spans[0].scope_spans[0].spans
    assert [a.key for a in encoded.attributes] == ["good", "after"]


def test_no_spans_is_an_empty_request() -> None:
    assert encode_spans([]) == b""


def test_the_exporter_posts_this_encoding_and_drops_a_batch_over_the_size_limit() -> None:
    spans = _spans()
    with receiver() as (endpoint, got):
        url = f"{endpoint}/v1/traces"
        exporter = SpanExporter(url)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert got.raw == [encode_spans(spans)]
        small = SpanExporter(url, max_request_size=len(got.raw[0]) - 1)
        assert small.export(spans) is SpanExportResult.FAILURE
        assert len(got.raw) == 1  # nothing sent
        exporter.shutdown()
        assert exporter.export(spans) is SpanExportResult.FAILURE
