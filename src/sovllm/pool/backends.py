"""What stands behind a replica: the engine in this process, a sovllm worker, or any
OpenAI-compatible server (vLLM, llama.cpp's server, SGLang, another sovllm).

Each backend opens request streams and answers health probes. A stream that breaks because
its replica failed raises ReplicaFailure, so the router can retry the request elsewhere when
no token has reached the client yet; a request the replica refused raises an EngineError.
Whatever the HTTP stack raises while talking to a replica is a ReplicaFailure, its own types or
not: on a peer that dies mid-connect, httpcore and anyio have raised AttributeError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from sovllm.engines.base import (
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    InvalidRequestError,
    ModelInfo,
    QueueFullError,
    RequestStream,
    Timings,
)
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.pool import wire

log = logging.getLogger("sovllm.pool")


class ReplicaFailure(Exception):
    """The replica, not the request, failed: refused connection, reset, 5xx, cut stream.

    `hard`: the replica is gone (no connection, a reset, a dead child), so its breaker opens at
    once; an error answer only counts towards the breaker's threshold.
    """

    def __init__(self, message: str, hard: bool = True) -> None:
        super().__init__(message)
        self.hard = hard


def replica_failure(exc: Exception, where: str) -> ReplicaFailure:
    """What an exception raised while talking to a replica (at `where`) means: its failure.

    httpx's own errors (refused, reset, timed out) say the replica is gone: hard. Anything else
    comes from below httpx (httpcore, anyio, the socket) or from a backend's bug, and proves
    nothing about the replica's health: soft, and logged with its traceback, since it is a bug
    somewhere. Its message stays in that log: it could quote a request, and the failure's text
    reaches the client and the audit log. Only `Exception`s: cancellation (a BaseException)
    always propagates.
    """
    if isinstance(exc, ReplicaFailure):
        return exc
    if isinstance(exc, httpx.HTTPError):
        return ReplicaFailure(f"{exc.__class__.__name__}: {exc}")
    log.warning("%s raised %r", where, exc, exc_info=exc)
    return ReplicaFailure(f"{where} raised {exc.__class__.__name__}", hard=False)


@dataclass(frozen=True)
class Probe:
    model: ModelInfo
    stats: EngineStats | None
    """Running and waiting counts, where the backend reports them."""


class Backend(Protocol):
    async def start(self) -> None:
        """Load what runs in this process, if anything (blocking work goes to a thread)."""
        ...

    async def open(self, request: GenerationRequest, prompt_tokens: int) -> RequestStream: ...

    async def probe(self) -> Probe:
        """Raise ReplicaFailure when the replica is not serving."""
        ...

    def live_stats(self) -> EngineStats | None:
        """Running and waiting counts now, where they are at hand (else the last probe's)."""
        ...

    def alive(self) -> bool | None:
        """Whether it serves, where that is known without a probe (in this process)."""
        ...

    async def close(self) -> None: ...


def _abort(prompt_tokens: int, completion_tokens: int, arrival: float) -> GenerationOutput:
    now = time.perf_counter()
    return GenerationOutput(
        "", (), prompt_tokens, completion_tokens, "abort", Timings(arrival, finished=now), time=now
    )


# -- in process ----------------------------------------------------------------------------


class LocalBackend:
    """The embedded engine inside the gateway process (a pool of one, the default)."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.engine = engine

    async def start(self) -> None:
        await asyncio.to_thread(self.engine.start)

    def live_stats(self) -> EngineStats | None:
        return self.engine.stats()

    def alive(self) -> bool | None:
        return self.engine.healthy

    async def open(self, request: GenerationRequest, prompt_tokens: int) -> RequestStream:
        return self.engine.submit(request)

    async def probe(self) -> Probe:
        if not self.engine.healthy:
            raise ReplicaFailure("the engine thread is not running")
        return Probe(self.engine.model, self.engine.stats())

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.shutdown)


# -- over HTTP -----------------------------------------------------------------------------


class _HttpStream:
    """One request's outputs read off an HTTP response by a reader task.

    The reader owns the response. The stream ends with exactly one terminal item: the final
    output, a ReplicaFailure, or (after `cancel()`) an abort; cancelling closes the connection,
    which frees the replica's slot.
    """

    def __init__(
        self,
        request_id: str,
        prompt_tokens: int,
        response: httpx.Response,
        parse: Callable[[httpx.Response, float], AsyncIterator[GenerationOutput]],
        arrival: float,
        stall_timeout_s: float | None = None,
    ) -> None:
        self.request_id = request_id
        self._stall = stall_timeout_s
        self.prompt_tokens = prompt_tokens
        self._arrival = arrival
        self._completion = 0
        self._ended = False
        self._queue: asyncio.Queue[GenerationOutput | ReplicaFailure] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(response, parse))

    def _end(self, item: GenerationOutput | ReplicaFailure) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(item)

    async def _read(
        self,
        response: httpx.Response,
        parse: Callable[[httpx.Response, float], AsyncIterator[GenerationOutput]],
    ) -> None:
        outputs = aiter(parse(response, self._arrival))
        started = False
        try:
            while True:
                # Before its first output a request may wait in the replica's queue for long;
                # after it, silence longer than the stall timeout means a replica that hangs.
                limit = self._stall if started else None
                try:
                    async with asyncio.timeout(limit):  # no task per output, unlike wait_for
                        out = await anext(outputs)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    self._end(ReplicaFailure(f"no output for {limit:g} s: the replica stalled"))
                    return
                started = True
                self._completion = out.completion_tokens
                if out.finished:
                    self._end(out)
                    return
                self._queue.put_nowait(out)
            self._end(ReplicaFailure("the replica ended the stream early"))
        except ReplicaFailure as exc:
            self._end(exc)
        except Exception as exc:  # any malformed answer: the replica's fault, never a hang
            # The text reaches the client and the audit log: httpx's own messages describe the
            # connection; any other exception's (a bad chunk's JSON error) may quote the answer.
            if isinstance(exc, httpx.HTTPError):
                detail = f"{exc.__class__.__name__}: {exc}"
            else:
                log.warning("a stream from %s broke", response.url, exc_info=exc)
                detail = exc.__class__.__name__
            self._end(ReplicaFailure(f"the stream broke: {detail}"))
        finally:
            await _close(response)

    async def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, ReplicaFailure):
                    raise item
                yield item
                if item.finished:
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._reader.cancel()
        self._end(_abort(self.prompt_tokens, self._completion, self._arrival))

    def fail(self, reason: str) -> None:
        """The replica is gone (its breaker opened): end the stream as a replica failure."""
        self._reader.cancel()
        self._end(ReplicaFailure(reason))


async def _close(response: httpx.Response) -> None:
    """Close a response whose connection may already be broken: nothing is left to report."""
    try:
        await response.aclose()
    except Exception as exc:
        log.debug("closing a response to %s failed: %r", response.url, exc)


async def _send(client: httpx.AsyncClient, req: httpx.Request) -> httpx.Response:
    try:
        response = await client.send(req, stream=True)
    except Exception as exc:
        raise replica_failure(exc, f"{req.method} {req.url}") from None
    if response.status_code >= 400:
        try:
            body = await response.aread()
        except Exception:  # the error answer's body is a courtesy; its status says enough
            body = b""
        finally:
            await _close(response)
        raise _refusal(response.status_code, body, response.headers.get("retry-after"))
    return response


def _refusal(status: int, body: bytes, retry_after: str | None = None) -> Exception:
    """A replica's error answer: the request's fault (EngineError) or the replica's."""
    error: dict[str, Any] = {}
    try:
        found = json.loads(body).get("error")
    except (ValueError, AttributeError):
        found = None
    if isinstance(found, dict):
        error = found
    message = str(error.get("message") or found or body.decode("utf-8", "replace"))[:300]
    if status == 429:
        wait = retry_after if retry_after and retry_after.isdigit() else error.get("retry_after")
        try:
            seconds = max(1, int(wait or 1))
        except (TypeError, ValueError):
            seconds = 1
        return QueueFullError(0, seconds)
    if status in (400, 404, 413, 422):
        return InvalidRequestError(message or f"the replica refused the request ({status})",
                                   error.get("param") if isinstance(error.get("param"), str)
                                   else None)  # fmt: skip
    return ReplicaFailure(f"HTTP {status}: {message}", hard=False)


class _Remote:
    """What HTTP backends share: nothing runs in this process; what they know comes by probe."""

    def __init__(
        self, url: str, token: str | None, client: httpx.AsyncClient,
        stall_timeout_s: float | None = None,
    ) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self._client = client
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._stall = stall_timeout_s

    async def start(self) -> None:
        return None

    def live_stats(self) -> EngineStats | None:
        return None

    def alive(self) -> bool | None:
        return None

    async def close(self) -> None:
        return None


class WorkerBackend(_Remote):
    """A `sovllm worker` process: the embedded engine behind the worker protocol."""

    async def open(self, request: GenerationRequest, prompt_tokens: int) -> RequestStream:
        arrival = time.perf_counter()
        req = self._client.build_request(
            "POST", self.url + wire.GENERATE_PATH,
            json=wire.request_to_json(request), headers=self._headers,
        )  # fmt: skip
        response = await _send(self._client, req)
        return _HttpStream(request.request_id, prompt_tokens, response, _worker_lines, arrival,
                           self._stall)  # fmt: skip

    async def probe(self) -> Probe:
        body = await _get_json(self._client, self.url + wire.INFO_PATH, self._headers)
        model, stats = wire.info_from_json(body)
        return Probe(model, stats)


async def _worker_lines(
    response: httpx.Response, arrival: float
) -> AsyncIterator[GenerationOutput]:
    first: float | None = None
    async for line in response.aiter_lines():
        if not line:
            continue
        now = time.perf_counter()
        out = wire.output_from_json(json.loads(line), arrival, now)
        if first is None and out.token_ids:
            first = now
        if out.timings is not None and first is not None:
            # TTFT as the gateway saw it, network included.
            out = _with_first_token(out, first)
        yield out


def _with_first_token(out: GenerationOutput, first: float) -> GenerationOutput:
    assert out.timings is not None
    return dataclasses.replace(out, timings=dataclasses.replace(out.timings, first_token=first))


async def _get(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    """A probe's GET: a lost connection is a hard failure, any answer but 200 a soft one."""
    try:
        response = await client.get(url, headers=headers)
    except Exception as exc:
        raise replica_failure(exc, f"GET {url}") from None
    if response.status_code != 200:
        raise ReplicaFailure(f"{url} answered HTTP {response.status_code}", hard=False)
    return response


async def _get_json(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Any:
    response = await _get(client, url, headers)
    try:
        return response.json()
    except ValueError:
        raise ReplicaFailure(f"{url} answered with something other than JSON", hard=False) from None


class OpenAIBackend(_Remote):
    """Any OpenAI-compatible server. Chat goes to /chat/completions, prompts to /completions.

    Token counts come from the upstream's `usage`; while streaming, each content chunk counts
    as one token (vLLM, SGLang and llama.cpp's server send one token a chunk).
    """

    def __init__(
        self,
        url: str,
        upstream_model: str,
        served: ModelInfo,
        api_key: str | None,
        client: httpx.AsyncClient,
        health_url: str | None = None,
        vllm: bool = False,
        stall_timeout_s: float | None = None,
    ) -> None:
        super().__init__(url, api_key, client, stall_timeout_s)
        self._upstream_model = upstream_model
        self._served = served
        self._health_url = health_url
        self._vllm = vllm
        """A vLLM server: per-tenant cache salts, and its /metrics for running and waiting."""

    async def open(self, request: GenerationRequest, prompt_tokens: int) -> RequestStream:
        arrival = time.perf_counter()
        s = request.sampling
        body: dict[str, Any] = {
            "model": self._upstream_model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if s.logit_bias:
            body["logit_bias"] = {str(t): b for t, b in s.logit_bias}
        if s.top_k:
            body["top_k"] = s.top_k  # vLLM, SGLang and llama.cpp accept it; OpenAI ignores it
        if s.ignore_eos:
            body["ignore_eos"] = True
        if s.min_tokens:
            body["min_tokens"] = s.min_tokens
        if self._vllm and request.flow:
            # One tenant's cached prefixes are never another's (vLLM's cache_salt).
            body["cache_salt"] = hashlib.sha256(request.flow.encode()).hexdigest()[:32]
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            path = "/chat/completions"
        else:
            body["prompt"] = (
                request.prompt if isinstance(request.prompt, str) else list(request.prompt or [])
            )
            path = "/completions"
        req = self._client.build_request("POST", self.url + path, json=body, headers=self._headers)
        response = await _send(self._client, req)
        chat = request.messages is not None

        def parse(response: httpx.Response, arrival: float) -> AsyncIterator[GenerationOutput]:
            return _sse_outputs(response, arrival, prompt_tokens, chat)

        return _HttpStream(request.request_id, prompt_tokens, response, parse, arrival, self._stall)

    async def probe(self) -> Probe:
        if self._health_url is not None:
            await _get(self._client, self._health_url, self._headers)
        body = await _get_json(self._client, self.url + "/models", self._headers)
        ids = [str(m.get("id")) for m in body.get("data", [])]
        if self._upstream_model not in ids:
            raise ReplicaFailure(
                f"the upstream does not serve {self._upstream_model!r} (it serves {ids})"
            )
        return Probe(self._served, await self._vllm_stats() if self._vllm else None)

    async def _vllm_stats(self) -> EngineStats | None:
        """vLLM's own gauges (/metrics): the pool's scaling signals cover vLLM replicas too."""
        base = self.url.removesuffix("/v1")
        try:
            response = await self._client.get(base + "/metrics", headers=self._headers)
        except Exception:  # the gauges are optional: without them the probe still stands
            return None
        if response.status_code != 200:
            return None
        return vllm_stats(response.text)


async def _sse_outputs(
    response: httpx.Response, arrival: float, prompt_tokens: int, chat: bool
) -> AsyncIterator[GenerationOutput]:
    completion = cached = 0
    first: float | None = None
    finish: str | None = None
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        now = time.perf_counter()
        if data == "[DONE]":
            yield GenerationOutput("", (), prompt_tokens, completion, _finish(finish),
                                   Timings(arrival, arrival, first, now), time=now,
                                   cached_tokens=cached)  # fmt: skip
            return
        chunk = json.loads(data)
        if "error" in chunk:
            message = str(chunk["error"].get("message", chunk["error"]))
            yield GenerationOutput("", (), prompt_tokens, completion, "error",
                                   Timings(arrival, arrival, first, now), message, now)  # fmt: skip
            return
        usage = chunk.get("usage")
        if usage:
            prompt_tokens = int(usage.get("prompt_tokens", prompt_tokens))
            completion = int(usage.get("completion_tokens", completion))
            details = usage.get("prompt_tokens_details") or {}
            cached = int(details.get("cached_tokens") or 0)
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            finish = choice.get("finish_reason") or finish
            if text:
                completion += 1
                first = first or now
                yield GenerationOutput(text, (), prompt_tokens, completion, time=now)
    raise ReplicaFailure("the upstream ended the stream without [DONE]")


def _finish(reason: str | None) -> Any:
    return reason if reason in ("stop", "length") else "stop"


_VLLM_GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:prefix_cache_queries_total": "prefix_cache_queries",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits",
}


def vllm_stats(text: str) -> EngineStats:
    """Running and waiting requests and prefix cache counters from vLLM's Prometheus text."""
    values = dict.fromkeys(_VLLM_GAUGES.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        field = _VLLM_GAUGES.get(name)
        if field is not None:
            try:
                values[field] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return EngineStats(
        running=int(values["running"]), waiting=int(values["waiting"]), slots=0, max_waiting=0,
        prefix_cache_queries=int(values["prefix_cache_queries"]),
        prefix_cache_hits=int(values["prefix_cache_hits"]),
    )  # fmt: skip
