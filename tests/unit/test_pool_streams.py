"""The pool's stream handling against scripted OpenAI-compatible upstreams (httpx.MockTransport).

The upstreams here misbehave on purpose, in ways a real server rarely does on cue: a malformed
chunk, a stream cut after its first token, a 500, a request that never gets a token. The pool's
code (routing, failover, deadlines, the breaker) runs for real over real httpx responses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from sovllm.engines.base import (
    ChatMessage,
    EngineUnavailableError,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    QueueFullError,
    SamplingParams,
)
from sovllm.pool.backends import LocalBackend, OpenAIBackend, ReplicaFailure
from sovllm.pool.replica import Replica
from sovllm.pool.router import Pool
from sovllm.pool.settings import RoutingSettings
from tests.scripted_engine import ScriptedEngine

MODEL = "m"


def chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


GOOD = [chunk("Hello"), chunk(" there"), chunk(None, "stop"), b"data: [DONE]\n\n"]

Script = Callable[[], AsyncIterator[bytes]]


def upstream(script: Script | list[bytes] | int, seen: list[str], name: str) -> httpx.MockTransport:
    """An upstream that answers /models, and /chat/completions with `script`."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": MODEL}]})
        seen.append(name)
        if isinstance(script, int):
            return httpx.Response(script, json={"error": "boom"})
        body = script() if callable(script) else _replay(script)
        return httpx.Response(
            200, stream=_Stream(body), headers={"content-type": "text/event-stream"}
        )

    return httpx.MockTransport(handle)


async def _replay(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class _Stream(httpx.AsyncByteStream):
    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._body:
            yield part


def make_pool(*scripts: Script | list[bytes] | int, **routing: object) -> tuple[Pool, list[str]]:
    settings = RoutingSettings(policy="round_robin", **routing)  # type: ignore[arg-type]
    seen: list[str] = []
    replicas = []
    for i, script in enumerate(scripts):
        backend = http_backend(upstream(script, seen, f"r{i}"), settings)
        replicas.append(Replica(f"r{i}", "openai", "", MODEL, backend, lambda r: 3, settings))
    return Pool(replicas, settings), seen


def http_backend(transport: httpx.AsyncBaseTransport, settings: RoutingSettings) -> OpenAIBackend:
    client = httpx.AsyncClient(transport=transport)
    info = ModelInfo(MODEL, "", "", 0, 0)
    return OpenAIBackend(
        "http://10.0.0.1/v1", MODEL, info, None, client, stall_timeout_s=settings.stall_timeout_s
    )


def request() -> GenerationRequest:
    return GenerationRequest("req", SamplingParams(max_tokens=8), [ChatMessage("user", "hi")])


async def collect(pool: Pool, **kw: float) -> list[GenerationOutput]:
    await asyncio.gather(*(r.probe() for r in pool.replicas))
    stream = await pool.open(MODEL, request(), None, 3, **kw)
    return [out async for out in stream]


async def test_a_malformed_chunk_before_the_first_token_fails_over() -> None:
    pool, seen = make_pool([b'data: {"error": "boom"}\n\n'], GOOD)
    outs = await collect(pool)
    assert "".join(o.text for o in outs) == "Hello there"
    assert outs[-1].finish_reason == "stop" and outs[-1].error is None
    assert seen == ["r0", "r1"]
    assert pool.replicas[0].last_error and pool.replicas[0].outstanding == 0


async def test_a_stream_cut_after_its_first_token_ends_with_an_error() -> None:
    pool, seen = make_pool([chunk("Hel")], GOOD)  # no [DONE]: the connection just ends
    outs = await collect(pool)
    assert outs[0].text == "Hel"
    assert outs[-1].finish_reason == "error"
    assert "replica serving this request failed" in (outs[-1].error or "")
    assert seen == ["r0"]  # a token had left: no retry
    assert pool.replicas[0].state == "unhealthy"  # the stream broke: the replica is out


async def test_an_error_answer_is_retried_but_does_not_open_the_breaker_alone() -> None:
    pool, seen = make_pool(500, GOOD, failure_threshold=2)
    outs = await collect(pool)
    assert "".join(o.text for o in outs) == "Hello there"
    assert seen == ["r0", "r1"]
    assert pool.replicas[0].state == "healthy" and pool.replicas[0].failures == 1


async def test_every_replica_full_is_429_and_none_healthy_is_503() -> None:
    pool, _ = make_pool(429, 429)
    with pytest.raises(QueueFullError):
        await collect(pool)
    pool, _ = make_pool(GOOD)
    pool.replicas[0].failed("gone", hard=True)
    with pytest.raises(EngineUnavailableError, match="no replica of 'm'"):
        await pool.open(MODEL, request(), None, 3)


async def test_a_request_without_a_first_token_by_its_deadline_is_dropped() -> None:
    never = asyncio.Event()

    async def silent() -> AsyncIterator[bytes]:
        await never.wait()  # an upstream that queues the request and never answers
        yield b""

    pool, _ = make_pool(silent)
    outs = await collect(pool, queue_timeout_s=0.05)
    assert outs[-1].finish_reason == "error" and "queue timeout" in (outs[-1].error or "")
    assert pool.replicas[0].outstanding == 0


async def test_when_the_breaker_opens_waiting_requests_move_to_another_replica() -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    async def hung() -> AsyncIterator[bytes]:
        started.set()
        await never.wait()
        yield b""

    pool, seen = make_pool(hung, GOOD)
    await asyncio.gather(*(r.probe() for r in pool.replicas))
    stream = await pool.open(MODEL, request(), None, 3)

    async def read() -> list[GenerationOutput]:
        return [out async for out in stream]

    reader = asyncio.create_task(read())
    await started.wait()
    pool.replicas[0].failed("its node vanished", hard=True)  # what a probe would conclude
    outs = await reader
    assert "".join(o.text for o in outs) == "Hello there"
    assert seen == ["r0", "r1"] and stream.replica is pool.replicas[1]


async def test_a_cancelled_request_is_let_go_everywhere() -> None:
    never = asyncio.Event()

    async def silent() -> AsyncIterator[bytes]:
        await never.wait()
        yield b""

    pool, _ = make_pool(silent)
    await pool.replicas[0].probe()
    stream = await pool.open(MODEL, request(), None, 3)
    assert pool.replicas[0].outstanding == 1
    stream.cancel()
    outs = [out async for out in stream]
    assert outs[-1].finish_reason == "abort"
    assert pool.replicas[0].outstanding == 0 and not pool.replicas[0].streams
    stream.close()  # idempotent
    assert pool.replicas[0].outstanding == 0


def test_vllm_gauges_become_the_replicas_stats() -> None:
    from sovllm.pool.backends import vllm_stats

    text = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 7.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 3.0
vllm:prefix_cache_queries_total{engine="0",model_name="llama"} 1200.0
vllm:prefix_cache_hits_total{engine="0",model_name="llama"} 900.0
vllm:num_requests_running_other 99
"""
    s = vllm_stats(text)
    assert (s.running, s.waiting, s.prefix_cache_queries, s.prefix_cache_hits) == (7, 3, 1200, 900)
    assert vllm_stats("garbage\nvllm:num_requests_waiting{} x\n").waiting == 0


async def test_a_replica_that_stalls_mid_stream_ends_the_request_with_an_error() -> None:
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield chunk("Hel")
        await never.wait()  # a frozen replica: the connection stays open, nothing comes
        yield b""

    pool, seen = make_pool(stalls, GOOD, stall_timeout_s=0.05)
    outs = await collect(pool)
    assert outs[0].text == "Hel"
    assert outs[-1].finish_reason == "error" and "stalled" in (outs[-1].error or "")
    assert seen == ["r0"] and pool.replicas[0].state == "unhealthy"


# -- faults that are not httpx's own types (issue #13: a killed replica made httpcore/anyio raise
# AttributeError while connecting, which escaped as a 500) ----------------------------------

GETPEERNAME = AttributeError("'NoneType' object has no attribute 'getpeername'")


class Unnamed(httpx.AsyncBaseTransport):
    """A transport that raises, for requests to `paths`, an exception httpx does not name, as
    httpcore/anyio did on a replica killed mid-connect; other requests pass to `inner`."""

    def __init__(self, fault: BaseException, inner: httpx.AsyncBaseTransport, *paths: str) -> None:
        self.fault, self.inner, self.paths = fault, inner, paths

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(self.paths):
            raise self.fault
        return await self.inner.handle_async_request(request)


async def test_a_fault_below_httpx_while_connecting_fails_over() -> None:
    pool, seen = make_pool(GOOD, GOOD)
    faulty = http_backend(
        Unnamed(GETPEERNAME, upstream(GOOD, seen, "r0"), "/chat/completions"), pool.settings
    )
    pool.replicas[0].backend = faulty
    with pytest.raises(ReplicaFailure, match="raised AttributeError"):
        await faulty.open(request(), 3)  # the backend names it a replica failure itself
    outs = await collect(pool)  # round robin: r0 first
    assert "".join(o.text for o in outs) == "Hello there"
    assert outs[-1].finish_reason == "stop" and outs[-1].error is None
    assert seen == ["r1"]
    r0 = pool.replicas[0]
    assert "AttributeError" in r0.last_error and r0.failures == 1 and r0.outstanding == 0


async def test_a_fault_below_httpx_after_the_first_token_ends_with_an_error() -> None:
    async def reset() -> AsyncIterator[bytes]:
        yield chunk("Hel")
        raise OSError(104, "Connection reset by peer")  # what a socket raises, unwrapped

    pool, seen = make_pool(reset, GOOD)
    outs = await collect(pool)
    assert outs[0].text == "Hel"
    assert outs[-1].finish_reason == "error"
    assert "replica serving this request failed" in (outs[-1].error or "")
    # Named by its class only: an exception's message may quote what the replica sent.
    error = outs[-1].error or ""
    assert error.endswith("ConnectionResetError") and "Connection reset by peer" not in error
    assert seen == ["r0"]  # a token had left: no retry
    assert pool.replicas[0].outstanding == 0


async def test_a_probe_that_raises_below_httpx_is_a_failed_probe() -> None:
    pool, seen = make_pool(GOOD)
    backend = http_backend(
        Unnamed(OSError("no route"), upstream(GOOD, seen, "r0"), "/models"), pool.settings
    )
    with pytest.raises(ReplicaFailure, match=r"/v1/models raised OSError"):
        await backend.probe()


def local_pool(*engines: ScriptedEngine) -> Pool:
    settings = RoutingSettings(policy="round_robin")
    replicas = [
        Replica(f"r{i}", "local", "", MODEL, LocalBackend(e), e.count_tokens, settings)  # type: ignore[arg-type]
        for i, e in enumerate(engines)
    ]
    return Pool(replicas, settings)


async def test_a_backend_that_raises_anything_opening_a_request_fails_over() -> None:
    broken, good = ScriptedEngine(fault=RuntimeError("engine bug")), ScriptedEngine()
    pool = local_pool(broken, good)
    outs = await collect(pool)
    assert "".join(o.text for o in outs) == "Hello there" and outs[-1].error is None
    assert (broken.submitted, good.submitted) == (1, 1)
    assert "raised RuntimeError" in pool.replicas[0].last_error
    assert pool.replicas[0].outstanding == 0


async def test_a_stream_that_raises_anything_before_its_first_token_fails_over() -> None:
    broken = ScriptedEngine(fault=RuntimeError("lost"), fault_at=0)
    good = ScriptedEngine()
    pool = local_pool(broken, good)
    outs = await collect(pool)
    assert "".join(o.text for o in outs) == "Hello there" and outs[-1].error is None
    assert (broken.submitted, good.submitted) == (1, 1)
    assert pool.replicas[0].outstanding == 0 and not pool.replicas[0].streams


async def test_a_stream_that_raises_anything_after_its_first_token_ends_with_an_error() -> None:
    broken = ScriptedEngine(fault=ValueError("bad step"), fault_at=1)
    good = ScriptedEngine()
    pool = local_pool(broken, good)
    outs = await collect(pool)
    assert outs[0].text == "Hello"
    assert outs[-1].finish_reason == "error" and "raised ValueError" in (outs[-1].error or "")
    assert "bad step" not in (outs[-1].error or "")  # the message may quote a request: log only
    assert good.submitted == 0 and pool.replicas[0].outstanding == 0


async def test_cancellation_while_connecting_still_propagates() -> None:
    entered = asyncio.Event()
    never = asyncio.Event()

    class Hangs(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/models"):
                return httpx.Response(200, json={"data": [{"id": MODEL}]})
            entered.set()
            await never.wait()  # a connect that never completes
            raise AssertionError("unreachable")

    pool, _ = make_pool(GOOD)
    pool.replicas[0].backend = http_backend(Hangs(), pool.settings)
    await pool.replicas[0].probe()
    opening = asyncio.create_task(pool.open(MODEL, request(), None, 3))
    await entered.wait()
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    r0 = pool.replicas[0]
    assert r0.outstanding == 0 and r0.failures == 0 and r0.state == "healthy"


def queued_probes(release: asyncio.Event) -> httpx.MockTransport:
    """An upstream that serves one request at a time: once a request came, its /models probe
    waits for `release`, as the request's first token does."""
    busy = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            if busy.is_set():
                await release.wait()
            return httpx.Response(200, json={"data": [{"id": MODEL}]})
        busy.set()

        async def body() -> AsyncIterator[bytes]:
            await release.wait()
            for part in GOOD:
                yield part

        return httpx.Response(
            200, stream=_Stream(body()), headers={"content-type": "text/event-stream"}
        )

    return httpx.MockTransport(handle)


async def test_a_probe_queued_behind_a_request_does_not_cut_it_off() -> None:
    """llama.cpp's own server: while it computes a request's first token, its health probe
    waits. The replica stays (the request is not failed over); an idle replica whose probe does
    not answer still leaves the pool."""
    settings = RoutingSettings(policy="round_robin", probe_timeout_s=0.05, failure_threshold=2)
    release = asyncio.Event()
    backend = http_backend(queued_probes(release), settings)
    replica = Replica("r0", "openai", "", MODEL, backend, lambda r: 3, settings)
    pool = Pool([replica], settings)
    await replica.probe()
    stream = await pool.open(MODEL, request(), None, 3)
    for _ in range(3):  # each times out, more than the threshold
        await replica.probe()
    assert replica.state == "healthy" and replica.failures == 0
    release.set()
    outs = [out async for out in stream]
    assert "".join(o.text for o in outs) == "Hello there" and outs[-1].error is None
    release.clear()  # the same silence from an idle replica is a failure
    for _ in range(2):
        await replica.probe()
    assert replica.state == "unhealthy"
    release.set()


async def test_a_busy_replica_silent_past_the_grace_leaves_the_pool() -> None:
    """A replica that hangs with requests in flight still leaves: after `busy_probe_grace_s`
    without an output, its timed-out probes open the breaker and the request fails over."""
    settings = RoutingSettings(
        policy="round_robin", probe_timeout_s=0.05, failure_threshold=2, busy_probe_grace_s=0.1
    )
    release = asyncio.Event()
    hung = Replica(
        "r0",
        "openai",
        "",
        MODEL,
        http_backend(queued_probes(release), settings),
        lambda r: 3,
        settings,
    )
    seen: list[str] = []
    good = Replica(
        "r1",
        "openai",
        "",
        MODEL,
        http_backend(upstream(GOOD, seen, "r1"), settings),
        lambda r: 3,
        settings,
    )
    pool = Pool([hung, good], settings)
    await asyncio.gather(hung.probe(), good.probe())
    stream = await pool.open(MODEL, request(), None, 3)
    assert stream.replica is hung
    await asyncio.wait_for(_until(lambda: hung.state == "unhealthy", hung.probe), timeout=10)
    outs = [out async for out in stream]
    assert "".join(o.text for o in outs) == "Hello there" and seen == ["r1"]
    release.set()


async def test_a_replica_whose_tokens_stop_with_its_probes_leaves_at_once() -> None:
    """Once tokens flow, a hang is found as fast as on an idle replica, grace or not."""
    # An hour of grace: only the rule for flowing tokens can open the breaker by the deadline.
    settings = RoutingSettings(
        policy="round_robin", probe_timeout_s=0.05, failure_threshold=2, busy_probe_grace_s=3600
    )
    frozen = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            if frozen.is_set():
                await asyncio.Event().wait()  # a frozen process: never answers
            return httpx.Response(200, json={"data": [{"id": MODEL}]})

        async def body() -> AsyncIterator[bytes]:
            yield chunk("Hel")
            frozen.set()
            await asyncio.Event().wait()
            yield b""

        return httpx.Response(
            200, stream=_Stream(body()), headers={"content-type": "text/event-stream"}
        )

    replica = Replica(
        "r0",
        "openai",
        "",
        MODEL,
        http_backend(httpx.MockTransport(handle), settings),
        lambda r: 3,
        settings,
    )
    pool = Pool([replica], settings)
    await replica.probe()
    stream = await pool.open(MODEL, request(), None, 3)
    outs: list[GenerationOutput] = []

    async def read() -> None:
        async for out in stream:
            outs.append(out)

    reader = asyncio.create_task(read())
    await asyncio.wait_for(frozen.wait(), timeout=10)
    await asyncio.wait_for(_until(lambda: replica.state == "unhealthy", replica.probe), 10)
    await asyncio.wait_for(reader, timeout=10)
    assert outs[0].text == "Hel" and outs[-1].finish_reason == "error"


async def _until(done: Callable[[], bool], step: Callable[[], Awaitable[None]]) -> None:
    while not done():
        await step()


async def test_a_timed_out_probe_leaves_no_stale_load_but_keeps_the_counters() -> None:
    """vLLM's gauges as last read would stand for its load while its probes time out (a busy
    CPU): the pool falls back to what it has in flight there, and keeps the cache counters."""
    settings = RoutingSettings(policy="round_robin", probe_timeout_s=0.05, failure_threshold=9)
    frozen = asyncio.Event()
    gauges = (
        'vllm:num_requests_running{model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{model_name="m"} 2.0\n'
        'vllm:prefix_cache_queries_total{model_name="m"} 90.0\n'
        'vllm:prefix_cache_hits_total{model_name="m"} 40.0\n'
    )

    async def handle(request: httpx.Request) -> httpx.Response:
        if frozen.is_set():
            await asyncio.Event().wait()  # a starved API server: never answers in time
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": MODEL}]})
        return httpx.Response(200, text=gauges)

    info = ModelInfo(MODEL, "", "", 0, 0)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    backend = OpenAIBackend(
        "http://10.0.0.1/v1", MODEL, info, None, client, health_url=None, vllm=True
    )
    replica = Replica("r0", "vllm", "", MODEL, backend, lambda r: 3, settings)
    await replica.probe()
    assert replica.stats is not None and (replica.stats.running, replica.stats.waiting) == (3, 2)
    frozen.set()
    replica.outstanding = 1
    await replica.probe()
    s = replica.stats
    assert s is not None and (s.running, s.waiting) == (1, 0)
    assert (s.prefix_cache_queries, s.prefix_cache_hits) == (90, 40)
    assert replica.state == "healthy"
