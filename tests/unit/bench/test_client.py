"""The streaming client against the stub server: what counts as the first token, where token
counts come from, and how each kind of failure is recorded."""

from __future__ import annotations

import json
import socket
import time

import pytest

from sovllm.bench import client as client_mod
from sovllm.bench.client import BenchClient, TargetError
from sovllm.bench.record import RequestRecord
from tests.unit.bench.stub import TEMPLATE_OVERHEAD, Stub, stub_server


async def one(stub: Stub, model: str, max_tokens: int = 5) -> RequestRecord:
    async with BenchClient(stub.base_url, "key", 4, 10.0) as c:
        target = await c.discover(model)
        record = RequestRecord(id=0, scheduled=time.perf_counter(), output_tokens_target=max_tokens)
        body = c.body(target, [{"role": "user", "content": "a b c"}], max_tokens, True)
        await c.stream(record, body, keep_text=True)
        return record


async def test_a_streamed_answer(stub: Stub) -> None:
    r = await one(stub, "stub", max_tokens=5)
    assert r.status == "ok" and r.error_type is None
    # The role-only chunk is not the first token: five content chunks, five timestamps.
    assert len(r.chunk_times) == 5
    assert r.first_token == r.chunk_times[0] and r.last_token == r.chunk_times[-1]
    assert r.sent is not None and r.end is not None
    assert r.scheduled <= r.sent <= r.first_token <= r.last_token <= r.end
    assert (r.prompt_tokens, r.output_tokens, r.token_source) == (TEMPLATE_OVERHEAD + 3, 5, "usage")
    assert r.finish_reason == "length"
    assert r.text == " tok" * 4 + " end"
    assert r.response_id is not None and r.response_id.startswith("chatcmpl-stub-")


async def test_crlf_events_split_mid_line(stub: Stub) -> None:
    r = await one(stub, "stub-crlf", max_tokens=4)
    assert r.status == "ok" and len(r.chunk_times) == 4 and r.output_tokens == 4


async def test_without_usage_the_chunks_are_counted(stub: Stub) -> None:
    r = await one(stub, "stub-no-usage", max_tokens=3)
    assert r.status == "ok" and (r.output_tokens, r.token_source) == (3, "chunks")
    assert r.prompt_tokens is None


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("stub-500", "HTTP 500"),
        ("stub-429", "HTTP 429"),
        ("stub-stream-error", "stream error: server_error"),
        ("stub-drop", "connection closed"),
    ],
)
async def test_failures_are_recorded_not_raised(stub: Stub, model: str, kind: str) -> None:
    r = await one(stub, model)
    assert r.status == "error"
    assert r.error_type == kind
    assert r.error
    assert r.end is not None


async def test_a_request_body_forces_the_length(stub: Stub) -> None:
    async with BenchClient(stub.base_url, None, 1, 5.0) as c:
        target = await c.discover(None)
        body = json.loads(c.body(target, [{"role": "user", "content": "x"}], 7, True))
        assert body["max_tokens"] == body["min_tokens"] == 7 and body["ignore_eos"] is True
        assert body["stream_options"] == {"include_usage": True}
        free = json.loads(c.body(target, [{"role": "user", "content": "x"}], 7, False))
        assert "ignore_eos" not in free and "min_tokens" not in free


async def test_discovery(stub: Stub) -> None:
    async with BenchClient(stub.base_url, None, 1, 5.0) as c:
        t = await c.discover(None)
        assert t.model == "stub" and t.context_length == 4096
        assert t.tokenize_url is not None and t.tokenize_url.endswith("/tokenize")
        assert await c.count_tokens(t, [{"role": "user", "content": "one two three"}]) == 13
        with pytest.raises(TargetError, match="model 'gpt-9' is not served"):
            await c.discover("gpt-9")


async def test_without_tokenize_the_count_comes_from_usage() -> None:
    with stub_server(tokenize=False) as s:
        async with BenchClient(s.base_url, None, 1, 5.0) as c:
            t = await c.discover(None)
            assert t.tokenize_url is None
            assert await c.count_tokens(t, [{"role": "user", "content": "one two"}]) == 12


async def test_unreachable_target_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        start = time.monotonic()
        async with BenchClient(f"http://127.0.0.1:{port}/v1", None, 1, 5.0) as c:
            with pytest.raises(TargetError, match="cannot reach"):
                await c.discover(None)
        assert time.monotonic() - start < 5


async def test_a_silent_target_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "DISCOVERY_TIMEOUT_S", 0.3)
    with stub_server(hang_models=True) as s:
        async with BenchClient(s.base_url, None, 1, 5.0) as c:
            with pytest.raises(TargetError, match=r"no answer .* within 0\.3 s"):
                await c.discover(None)


async def test_a_failing_token_count_is_a_target_error(stub: Stub) -> None:
    async with BenchClient(stub.base_url, None, 1, 5.0) as c:
        t = await c.discover("stub-500")
        no_tokenize = client_mod.Target(t.base_url, "stub-500", None, None, None)
        with pytest.raises(TargetError, match="probe failed"):
            await c.count_tokens(no_tokenize, [{"role": "user", "content": "x"}])
