"""Telemetry settings and their checks: off by default, an endpoint only past the egress list.

The request's span tree is checked here against the SDK's in-memory exporter, and end to end
against a real OTLP receiver (tests/integration/test_tracing.py).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from sovllm.config import ConfigError, Settings, load_settings
from sovllm.engines.base import GenerationOutput, SamplingParams, Timings
from sovllm.observability import tracing
from sovllm.observability.span_records import RecordsTracerProvider, SpanRecords
from sovllm.serve.gateway import ServeError, open_telemetry


def test_telemetry_is_off_by_default_and_sends_no_traceparent() -> None:
    telemetry = open_telemetry(Settings())
    assert not telemetry.enabled
    trace = tracing.start_request(telemetry, True, "m", SamplingParams())
    with trace.current():
        assert tracing.traceparent() == {}


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("otlp_endpoint", "ftp://collector:4318", "not an http(s) URL"),
        ("otlp_endpoint", "http://:4318", "not an http(s) URL"),
        ("otlp_endpoint", "http://collector:port", "port is not a number"),
        ("sample_ratio", "1.5", "less than or equal to 1"),
    ],
)
def test_a_wrong_telemetry_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str, says: str
) -> None:
    monkeypatch.setenv(f"SOVLLM_TELEMETRY__{setting.upper()}", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"'telemetry.{setting}'" in str(err.value) and says in str(err.value)


def test_an_endpoint_outside_private_networks_needs_the_egress_allow_list() -> None:
    settings = Settings(telemetry={"otlp_endpoint": "http://192.0.32.10:4318"})
    with pytest.raises(ServeError) as err:
        open_telemetry(settings)
    message = str(err.value)
    assert "invalid setting 'telemetry.otlp_endpoint'" in message and "egress_allow" in message


def test_a_loopback_endpoint_turns_export_on() -> None:
    settings = Settings(telemetry={"otlp_endpoint": "http://127.0.0.1:4318"})
    telemetry = open_telemetry(settings, "worker")
    try:
        assert telemetry.enabled
    finally:
        telemetry.shutdown()


def test_phases_follow_the_engine_clock_and_the_metrics_the_request() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = tracing.Telemetry(provider, tracing.disabled().meter_provider)
    out = GenerationOutput(
        "", (), 7, 3, "length", Timings(10.0, 10.5, 11.0, 13.0), time=13.0, cached_tokens=2
    )
    tracing.engine_span(telemetry, "m", out)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"engine m", "queue wait", "prefill", "decode"}
    seconds = {name: (s.end_time or 0) - (s.start_time or 0) for name, s in spans.items()}
    expected = {"engine m": 3.0, "queue wait": 0.5, "prefill": 0.5, "decode": 2.0}
    assert {k: v / 1e9 for k, v in seconds.items()} == pytest.approx(expected, abs=1e-8)
    decode_parent = spans["decode"].parent
    assert decode_parent is not None and decode_parent.span_id == spans["engine m"].context.span_id
    assert spans["engine m"].attributes == {
        "gen_ai.request.model": "m",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.response.finish_reasons": ("length",),
        "sovllm.prefix_cached_tokens": 2,
    }


def _recording(
    sampler: Sampler = ALWAYS_ON,
) -> tuple[tracing.Telemetry, InMemorySpanExporter, TracerProvider]:
    """Telemetry whose request spans (span_records.py) and SDK spans end in one exporter."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(processor)
    scope = InstrumentationScope("sovllm", "test", tracing.SCHEMA_URL)
    records = SpanRecords(processor, provider.resource, scope, sampler)
    telemetry = tracing.Telemetry(provider, tracing.disabled().meter_provider, records=records)
    return telemetry, exporter, provider


def test_a_request_span_and_its_children_are_recorded_under_the_http_span() -> None:
    telemetry, exporter, provider = _recording()
    out = GenerationOutput(
        "", (), 7, 3, "length", Timings(10.0, 10.5, 11.0, 13.0), time=13.0, cached_tokens=2
    )
    written: Future[int] = Future()
    with provider.get_tracer("fastapi").start_as_current_span("POST /v1/chat/completions") as http:
        trace = tracing.start_request(telemetry, True, "m", SamplingParams(max_tokens=5))
        with trace.current():
            # The replicas continue the request span's trace, sampled.
            span_id = format(trace.span.context.span_id, "016x")
            assert tracing.traceparent()["traceparent"].endswith(f"-{span_id}-01")
            with trace.child("admission"):
                pass
        trace.admitted("chatcmpl-1", "m", "acme", "worker-0")
        trace.end(out, "completed", written)
    # The request span waits for its audit write to be durable.
    assert "chat m" not in {s.name for s in exporter.get_finished_spans()}
    written.set_result(1)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "POST /v1/chat/completions",
        "chat m",
        "admission",
        "queue wait",
        "prefill",
        "decode",
        "audit write",
    }
    chat = spans["chat m"]
    assert chat.parent is not None and chat.parent.span_id == http.get_span_context().span_id
    assert {s.context.trace_id for s in spans.values()} == {http.get_span_context().trace_id}
    for child in ("admission", "queue wait", "prefill", "decode", "audit write"):
        parent = spans[child].parent
        assert parent is not None and parent.span_id == chat.context.span_id, child
    seconds = {n: ((spans[n].end_time or 0) - (spans[n].start_time or 0)) / 1e9 for n in spans}
    assert seconds["prefill"] == pytest.approx(0.5, abs=1e-6)
    assert seconds["decode"] == pytest.approx(2.0, abs=1e-6)
    assert dict(chat.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "sovllm",
        "gen_ai.request.model": "m",
        "gen_ai.request.temperature": 1.0,
        "gen_ai.request.top_p": 1.0,
        "gen_ai.request.max_tokens": 5,
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.model": "m",
        "sovllm.tenant": "acme",
        "sovllm.replica": "worker-0",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.response.finish_reasons": ["length"],
        "sovllm.prefix_cached_tokens": 2,
    }
    assert chat.status.status_code == StatusCode.UNSET
    assert chat.instrumentation_scope is not None
    assert chat.instrumentation_scope.schema_url == tracing.SCHEMA_URL


def test_a_refusal_ends_the_span_in_error_naming_only_its_type() -> None:
    telemetry, exporter, _ = _recording()
    trace = tracing.start_request(telemetry, False, "m", SamplingParams())
    trace.refused(PermissionError("a message that may quote the request"))
    [span] = exporter.get_finished_spans()
    assert span.name == "text_completion m" and span.parent is None
    assert span.status.status_code == StatusCode.ERROR and not span.status.description
    assert (span.attributes or {})["error.type"] == "PermissionError"


@pytest.mark.parametrize("caller_sampled", [True, False])
def test_the_callers_sampling_decision_is_followed(caller_sampled: bool) -> None:
    telemetry, exporter, _ = _recording(ParentBased(TraceIdRatioBased(0.5)))
    flags = TraceFlags(TraceFlags.SAMPLED if caller_sampled else TraceFlags.DEFAULT)
    caller = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=flags)
    with otel_trace.use_span(otel_trace.NonRecordingSpan(caller)):
        trace = tracing.start_request(telemetry, True, "m", SamplingParams())
        with trace.current():
            # The decision goes on to the replicas either way.
            assert tracing.traceparent()["traceparent"].endswith("-01" if caller_sampled else "-00")
            with trace.child("admission"):
                pass
    trace.refused(RuntimeError())
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == (["admission", "chat m"] if caller_sampled else [])
    assert all(s.context.trace_id == 0x1234 for s in exporter.get_finished_spans())


def test_a_root_request_span_is_sampled_by_the_ratio() -> None:
    never, never_got, _ = _recording(ParentBased(TraceIdRatioBased(0.0)))
    always, always_got, _ = _recording(ParentBased(TraceIdRatioBased(1.0)))
    for telemetry in (never, always):
        tracing.start_request(telemetry, True, "m", SamplingParams()).refused(RuntimeError())
    assert never_got.get_finished_spans() == ()
    assert [s.name for s in always_got.get_finished_spans()] == ["chat m"]


def _records_app(sampler: Sampler = ALWAYS_ON) -> tuple[Any, InMemorySpanExporter]:
    """A FastAPI app whose own HTTP telemetry runs on span records (RecordsTracerProvider)."""
    from fastapi import FastAPI

    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    scope = InstrumentationScope("sovllm", "test", tracing.SCHEMA_URL)
    records = SpanRecords(processor, TracerProvider().resource, scope, sampler)
    telemetry = tracing.Telemetry(
        RecordsTracerProvider(records), tracing.disabled().meter_provider, records=records
    )
    app = FastAPI(telemetry=telemetry.fastapi())

    @app.get("/items/{item}")
    def item(item: int) -> dict[str, int]:
        if item == 0:
            raise ValueError("a message that may quote the request")
        return {"item": item}

    return app, exporter


def test_fastapis_http_spans_are_records_under_the_callers_trace() -> None:
    from fastapi.testclient import TestClient

    app, exporter = _records_app(ParentBased(TraceIdRatioBased(0.0)))
    caller = "00-0000000000000000000000000000abcd-00000000000000ef-01"
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/items/7", headers={"traceparent": caller}).status_code == 200
        assert client.get("/items/0", headers={"traceparent": caller}).status_code == 500
        # No caller: a root, which the sampler (ratio 0) drops.
        assert client.get("/items/8").status_code == 200
    ok, failed = exporter.get_finished_spans()
    assert ok.name == failed.name == "GET /items/{item}"
    assert ok.kind == otel_trace.SpanKind.SERVER
    assert ok.instrumentation_scope is not None and ok.instrumentation_scope.name == "fastapi"
    for span in (ok, failed):
        assert span.context.trace_id == 0xABCD and span.context.trace_flags.sampled
        assert span.parent is not None and span.parent.span_id == 0xEF and span.parent.is_remote
    attributes = dict(ok.attributes or {})
    assert attributes["http.route"] == "/items/{item}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/items/7"
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "ValueError"
    # FastAPI records no exception event here (its message could quote the request). Should a
    # version start to, this fails: then check it goes through `record_exception`, which keeps
    # the type only (test_a_recorded_span_follows_the_span_apis_rules).
    assert not failed.events


def test_a_recorded_span_follows_the_span_apis_rules() -> None:
    exporter = InMemorySpanExporter()
    scope = InstrumentationScope("sovllm", "test", tracing.SCHEMA_URL)
    records = SpanRecords(
        SimpleSpanProcessor(exporter), TracerProvider().resource, scope, ALWAYS_ON
    )
    tracer = RecordsTracerProvider(records).get_tracer("lib", "1.0")
    with tracer.start_as_current_span("outer") as outer:
        assert otel_trace.get_current_span() is outer and outer.is_recording()
        inner = tracer.start_span("inner", attributes={"a": 1})
        inner.set_status(StatusCode.OK)
        inner.set_status(StatusCode.ERROR, "ignored: OK is final")
        inner.record_exception(KeyError("secret"))
        inner.update_name("renamed")
        inner.end()
        assert not inner.is_recording()
        inner.set_attribute("late", True)
        inner.end()  # a second end exports nothing more
        outer.set_status(Status(StatusCode.ERROR, "why"))
    renamed, ended = exporter.get_finished_spans()
    assert renamed.name == "renamed" and renamed.status.status_code == StatusCode.OK
    assert renamed.parent is not None and renamed.parent.span_id == ended.context.span_id
    [event] = renamed.events
    assert event.name == "exception" and dict(event.attributes or {}) == {
        "exception.type": "KeyError"
    }
    assert renamed.instrumentation_scope is not None
    assert renamed.instrumentation_scope.version == "1.0"
    assert ended.status.status_code == StatusCode.ERROR and ended.status.description == "why"
