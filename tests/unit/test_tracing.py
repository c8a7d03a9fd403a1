"""Telemetry settings and their checks: off by default, an endpoint only past the egress list.

The spans themselves are checked end to end against a real OTLP receiver
(tests/integration/test_tracing.py).
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sovllm.config import ConfigError, Settings, load_settings
from sovllm.engines.base import GenerationOutput, SamplingParams, Timings
from sovllm.observability import tracing
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
