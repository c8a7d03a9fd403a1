"""Traces and GenAI metrics over OTLP/HTTP, received by a real receiver on loopback.

The receiver is a plain HTTP server decoding the protobufs with opentelemetry-proto: what it
gets is exactly what a collector would. The gateway and its worker replica are real processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MODEL_ID, run_server, wait_until
from tests.integration.test_privacy import CORPUS
from tests.otlp_receiver import attrs, receiver

pytestmark = pytest.mark.slow
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
ONE_WORKER = ("--replicas", "1")
SECRET = "Zorblax Quintavelle of 17 Via Sempione"  # prompt content that must never be sent
USER = "mario.rossi@example.com"  # the end user: never in a span
# The GenAI semantic conventions' explicit bucket boundaries (gen-ai-metrics.md).
SPEC_BUCKETS = {
    name: [float(b) for b in bounds.split()]
    for name, bounds in {
        "gen_ai.client.token.usage": "1 4 16 64 256 1024 4096 16384 65536 262144 1048576 "
        "4194304 16777216 67108864",
        "gen_ai.server.request.duration": "0.01 0.02 0.04 0.08 0.16 0.32 0.64 1.28 2.56 5.12 "
        "10.24 20.48 40.96 81.92",
        "gen_ai.server.time_per_output_token": "0.01 0.025 0.05 0.075 0.1 0.15 0.2 0.3 0.4 0.5 "
        "0.75 1.0 2.5",
        "gen_ai.server.time_to_first_token": "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 "
        "0.75 1.0 2.5 5.0 7.5 10.0",
    }.items()
}


def _stream_chat(url: str, key: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": f"Write a letter to {SECRET}."}],
        max_tokens=12,
        temperature=0.5,
        top_p=0.9,
        user=USER,
        stream=True,
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_a_streamed_chat_through_a_worker_is_one_trace_with_genai_attributes(
    tmp_path: Path,
) -> None:
    with receiver() as (endpoint, got):
        env = {"SOVLLM_TELEMETRY__OTLP_ENDPOINT": endpoint, **FAST_EXPORT}
        with run_server(tmp_path, env=env, args=ONE_WORKER) as srv:
            answer = _stream_chat(srv.url, srv.api_key)
            with pytest.raises(openai.AuthenticationError):
                _stream_chat(srv.url, "sk-sovllm-not-a-key-of-ours")
            wait_until(lambda: got.named("audit write"), "the audit write's span")
            wait_until(lambda: got.named("engine "), "the worker's engine span")
            wait_until(lambda: set(SPEC_BUCKETS) <= set(got.metrics), "the GenAI metrics")
            duration = "gen_ai.server.request.duration"
            wait_until(
                lambda: len(got.metrics[duration].histogram.data_points) == 2, "the refusal's"
            )

        refused = [s for _, s in got.named(f"chat {MODEL_ID}") if s.status.code == 2]  # ERROR
        [(service, chat)] = [(v, s) for v, s in got.named(f"chat {MODEL_ID}") if s not in refused]
        assert service == "sovllm"
        # The refusal: its type, never its message; nothing past admission.
        [denied] = refused
        assert attrs(denied.attributes)["error.type"] == "AuthError"
        assert denied.status.message == ""
        assert not any(s.parent_span_id == denied.span_id for _, s in got.named("audit write"))
        trace = [(svc, s) for svc, s in got.spans if s.trace_id == chat.trace_id]
        by_name = {s.name: s for svc, s in trace if svc == "sovllm"}  # the gateway's
        # FastAPI's HTTP span is the request span's parent: the GenAI layer sits on top of
        # FastAPI's own telemetry (its operation spans are off: no fastapi.endpoint).
        http = by_name["POST /v1/chat/completions"]
        assert chat.parent_span_id == http.span_id
        assert not any(name.startswith("fastapi.") for name in by_name)
        for child in ("admission", "queue wait", "prefill", "decode", "audit write"):
            assert by_name[child].parent_span_id == chat.span_id, child
        # The worker continued the trace: its HTTP span under the request span, the engine's
        # under that; one trace id from the client's request to the engine.
        worker_spans = {s.name: s for svc, s in trace if svc == "sovllm-worker"}
        worker_http = worker_spans["POST /v1/engine/generate"]
        assert worker_http.parent_span_id == chat.span_id
        assert worker_spans[f"engine {MODEL_ID}"].parent_span_id == worker_http.span_id
        prefill, decode = by_name["prefill"], by_name["decode"]
        assert prefill.end_time_unix_nano <= decode.start_time_unix_nano + 1000

        a = attrs(chat.attributes)
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == MODEL_ID
        assert a["gen_ai.request.max_tokens"] == 12
        assert a["gen_ai.request.temperature"] == pytest.approx(0.5)
        assert a["gen_ai.request.top_p"] == pytest.approx(0.9)
        assert a["gen_ai.usage.input_tokens"] > 0
        assert 0 < a["gen_ai.usage.output_tokens"] <= 12
        assert a["gen_ai.response.finish_reasons"] in (["length"], ["stop"])
        assert a["sovllm.tenant"] == "admin"  # the bootstrap key's tenant
        assert a["sovllm.replica"] == "worker-0"
        assert a["sovllm.prefix_cached_tokens"] >= 0

        # The spec's bucket boundaries; one request measured (and one refused, by duration).
        for name, bounds in SPEC_BUCKETS.items():
            points = got.metrics[name].histogram.data_points
            assert all(list(p.explicit_bounds) == pytest.approx(bounds) for p in points), name
        ttft = got.metrics["gen_ai.server.time_to_first_token"].histogram.data_points
        assert [p.count for p in ttft] == [1]
        durations = got.metrics[duration].histogram.data_points
        errors = sorted(attrs(p.attributes).get("error.type", "") for p in durations)
        assert errors == ["", "AuthError"]
        # Nothing of the prompt, the answer or the user in anything sent.
        sent = b"".join(got.raw)
        assert SECRET.encode() not in sent and b"Zorblax" not in sent
        assert USER.encode() not in sent and b"mario.rossi" not in sent
        assert len(answer) > 3 and answer.encode() not in sent


def test_without_an_endpoint_nothing_is_sent(tmp_path: Path) -> None:
    """Not even when the environment asks FastAPI's own telemetry to export: only
    `telemetry.otlp_endpoint` turns export on."""
    with receiver() as (endpoint, got):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "FASTAPI_OTEL_AUTO_CONFIGURE": "true",
            **FAST_EXPORT,
        }
        with run_server(tmp_path, env=env, args=ONE_WORKER) as srv:
            assert _stream_chat(srv.url, srv.api_key)
        # The gateway and its worker have exited (their exporters would have flushed at exit).
        assert srv.process.returncode is not None
        assert got.raw == []


def test_json_logs_name_the_request_and_its_trace_and_no_personal_data(tmp_path: Path) -> None:
    """log_format json with tracing on: a line per event with the request and trace ids; the
    personal-data corpus, sent by every route, streamed or not, is in no log line and no span."""
    with receiver() as (endpoint, got):
        env = {
            "SOVLLM_TELEMETRY__OTLP_ENDPOINT": endpoint,
            "SOVLLM_LOG_FORMAT": "json",
            "SOVLLM_LOG_LEVEL": "debug",
            **FAST_EXPORT,
        }
        with run_server(tmp_path, env=env, args=ONE_WORKER) as srv:
            prompt = "Summarise: " + "; ".join(CORPUS)
            request_ids = []
            for stream in (False, True):
                for path, body in (
                    ("/chat/completions", {"messages": [{"role": "user", "content": prompt}]}),
                    ("/completions", {"prompt": prompt}),
                ):
                    payload = {"model": MODEL_ID, "max_tokens": 8, "stream": stream, **body}
                    payload["user"] = CORPUS[0]
                    with httpx.stream(
                        "POST",
                        f"{srv.base_url}{path}",
                        json=payload,
                        headers=srv.auth,
                        timeout=60,
                    ) as r:
                        assert r.status_code == 200
                        request_ids.append(r.headers["x-request-id"])
                        for _ in r.iter_lines():
                            pass
            wait_until(lambda: len(got.named("audit write")) == 4, "the four requests' spans")
        logs = srv.log.read_bytes()
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith(b"{")]
        ended = {line["request_id"]: line for line in lines if " ended " in line["message"]}
        assert set(ended) == set(request_ids)
        traces = {
            attrs(s.attributes)["gen_ai.response.id"]: s.trace_id.hex()
            for _, s in got.named(f"chat {MODEL_ID}") + got.named(f"text_completion {MODEL_ID}")
        }
        assert {rid: line["trace_id"] for rid, line in ended.items()} == traces
        assert any(line["logger"] == "uvicorn.access" for line in lines)  # uvicorn's, too
        sent = b"".join(got.raw)
        for value in CORPUS:
            assert value.encode() not in logs, value
            assert value.encode() not in sent, value


def test_an_openai_compatible_upstream_continues_the_trace(tmp_path: Path) -> None:
    """The `traceparent` goes to OpenAI-compatible replicas (vLLM's kind) too: here the upstream
    is another sovllm, exporting to the same receiver, whose HTTP span joins the trace."""
    with receiver() as (endpoint, got):
        env = {"SOVLLM_TELEMETRY__OTLP_ENDPOINT": endpoint, **FAST_EXPORT}
        upstream_env = {**env, "SOVLLM_TELEMETRY__SERVICE_NAME": "upstream"}
        with run_server(tmp_path / "upstream", env=upstream_env) as upstream:
            config = tmp_path / "sovllm.yaml"
            replica = {
                "kind": "openai",
                "url": upstream.base_url,
                "model": MODEL_ID,
                "served_model_name": "via-upstream",
                "api_key_env": "UPSTREAM_KEY",
                "tokenizer": MODEL_ID,
            }
            config.write_text(json.dumps({"replicas": [replica]}))
            gateway_env = {**env, "UPSTREAM_KEY": upstream.api_key}
            args = ("--config", str(config))
            with run_server(tmp_path / "gateway", env=gateway_env, args=args) as srv:
                client = openai.OpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0)
                reply = client.chat.completions.create(
                    model="via-upstream",
                    messages=[{"role": "user", "content": "Hi"}],
                    max_tokens=4,
                )
                assert reply.choices[0].message.content is not None
                wait_until(lambda: got.named("chat via-upstream"), "the gateway's request span")
                wait_until(lambda: len(got.named(f"chat {MODEL_ID}")) == 1, "the upstream's")
    [(_, outer)] = got.named("chat via-upstream")
    [(service, inner)] = got.named(f"chat {MODEL_ID}")
    assert service == "upstream" and inner.trace_id == outer.trace_id
    upstream_http = next(
        s for svc, s in got.spans if svc == "upstream" and s.name == "POST /v1/chat/completions"
    )
    assert upstream_http.parent_span_id == outer.span_id
