"""The HTTP side: discover the target, count tokens, stream one chat request and time it.

Every time is `time.perf_counter()` (monotonic). A chunk is timed when its bytes come off the
socket, before it is parsed, so parsing never shows up in TTFT or ITL. The first token is the
first chunk whose delta carries content (text, reasoning or a tool call): a role-only chunk or
the trailing usage chunk never counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from sovllm.bench.prompts import Messages
from sovllm.bench.record import RequestRecord
from sovllm.bench.transport import LeanTransport

HttpKind = Literal["auto", "lean", "httpx"]
_CONTENT_KEYS = ("content", "reasoning_content", "reasoning", "tool_calls")
DISCOVERY_TIMEOUT_S = 4.5


class TargetError(Exception):
    """The target cannot be benchmarked (unreachable, not OpenAI-compatible, key refused)."""


@dataclass(frozen=True)
class Target:
    base_url: str
    model: str
    context_length: int | None
    fingerprint: str | None
    tokenize_url: str | None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _root(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _error_message(response: httpx.Response) -> str:
    try:
        doc = response.json()
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        message = err.get("message", err) if isinstance(err, dict) else err
        return str(message)
    except (ValueError, UnicodeDecodeError):
        return response.text[:300]


def _transport_error(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect error"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection closed"
    return type(exc).__name__


def _proxied(url: str) -> bool:
    """Whether the environment routes `url` through a proxy (HTTP_PROXY, ALL_PROXY, ...)."""
    proxies = urllib.request.getproxies()
    scheme = urllib.parse.urlsplit(url).scheme
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    host = urllib.parse.urlsplit(url).hostname or ""
    return not urllib.request.proxy_bypass(host)


class BenchClient:
    """An httpx client whose connection limit is above the peak number of requests in flight.

    A pool smaller than the concurrency would queue requests inside the client and show up as
    server latency (aiohttp's default of 100 connections did that to more than one benchmark).

    `http="lean"` (what the default `auto` picks unless a proxy applies) puts `LeanTransport`
    under httpx: the same API, requests and exceptions, at about a third of the CPU per
    streamed request (see transport.py). `http="httpx"` is httpx's own transport, split over `SHARDS` clients
    because httpcore scans every pooled connection (one poll() each) on every request: with
    hundreds of connections in one pool that scan, not the server, set the latency at a few
    hundred requests/s. It is the one that honours proxies, and the benchmark's baseline.
    """

    SHARDS = 8
    POOL_HEADROOM = 16

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        max_in_flight: int | None,
        request_timeout_s: float,
        http: HttpKind = "auto",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        if http == "auto":
            http = "httpx" if _proxied(self.base_url) else "lean"
        self.http: HttpKind = http
        timeout = httpx.Timeout(request_timeout_s, connect=5.0)
        # None: an uncapped open loop can have any number in flight, so no pool limit at all.
        if http == "lean":
            limit = None if max_in_flight is None else max_in_flight + self.POOL_HEADROOM
            limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
            self.transport: LeanTransport | None = LeanTransport(limits)
            self._shards = [
                httpx.AsyncClient(
                    headers=_headers(api_key), timeout=timeout, transport=self.transport
                )
            ]
        else:
            self.transport = None
            shards = self.SHARDS if max_in_flight is None or max_in_flight > 32 else 1
            per_shard = (
                None if max_in_flight is None else -(-max_in_flight // shards) + self.POOL_HEADROOM
            )
            limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
            # One TLS context for all shards: each costs ~35 ms to load the CA store.
            tls = httpx.create_ssl_context()
            self._shards = [
                httpx.AsyncClient(
                    headers=_headers(api_key), limits=limits, timeout=timeout, verify=tls
                )
                for _ in range(shards)
            ]
        self._http = self._shards[0]
        self._busy = [0] * len(self._shards)
        self.chat_url = f"{self.base_url}/chat/completions"
        self._chat_url = httpx.URL(self.chat_url)  # parsed once: httpx re-parses a str each time

    async def __aenter__(self) -> BenchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for http in self._shards:
            await http.aclose()

    # -- discovery ------------------------------------------------------------------------

    async def discover(self, model: str | None) -> Target:
        """GET /models within a few seconds, or a TargetError that says what went wrong."""
        url = f"{self.base_url}/models"
        try:
            response = await asyncio.wait_for(
                self._http.get(url, timeout=DISCOVERY_TIMEOUT_S), DISCOVERY_TIMEOUT_S
            )
        except (TimeoutError, httpx.TimeoutException):
            raise TargetError(f"no answer from {url} within {DISCOVERY_TIMEOUT_S:g} s") from None
        except httpx.ConnectError as exc:
            raise TargetError(f"cannot reach {url}: {exc or 'connection refused'}") from None
        except httpx.HTTPError as exc:
            raise TargetError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (401, 403):
            raise TargetError(
                f"{url} refused the API key (HTTP {response.status_code}): "
                f"{_error_message(response)}"
            )
        if response.status_code != 200:
            raise TargetError(
                f"{url} answered HTTP {response.status_code}; is this an OpenAI-compatible "
                f"base URL ending in /v1? {_error_message(response)}"
            )
        try:
            cards = [c for c in response.json()["data"] if isinstance(c, dict)]
        except (ValueError, KeyError, TypeError):
            raise TargetError(f"{url} did not return an OpenAI model list") from None
        ids = [str(c.get("id")) for c in cards]
        if model is None:
            if not cards:
                raise TargetError(f"{url} lists no models; name one with --model")
            card = cards[0]
        else:
            found = [c for c in cards if c.get("id") == model]
            if cards and not found:
                raise TargetError(f"model '{model}' is not served at {url}; it serves {ids}")
            card = found[0] if found else {"id": model}
        ctx = card.get("context_length") or card.get("max_model_len")
        return Target(
            base_url=self.base_url,
            model=str(card["id"]),
            context_length=int(ctx) if isinstance(ctx, int | float) else None,
            fingerprint=str(card["sha256"]) if card.get("sha256") else None,
            tokenize_url=await self._tokenize_url(str(card["id"])),
        )

    async def _tokenize_url(self, model: str) -> str | None:
        """vLLM's `/tokenize` (beside /v1) counts a chat prompt with its template, if present."""
        url = f"{_root(self.base_url)}/tokenize"
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
        try:
            response = await self._http.post(url, json=body, timeout=DISCOVERY_TIMEOUT_S)
            ok = response.status_code == 200 and isinstance(response.json().get("count"), int)
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return url if ok else None

    async def count_tokens(self, target: Target, messages: Messages) -> int:
        """Prompt tokens of `messages` as the server counts them, template included."""
        try:
            if target.tokenize_url is not None:
                response = await self._http.post(
                    target.tokenize_url, json={"model": target.model, "messages": messages}
                )
                what = "/tokenize"
            else:
                body = {"model": target.model, "messages": messages, "max_tokens": 1}
                response = await self._http.post(self.chat_url, json=body)
                what = "a 1-token probe"
            if response.status_code != 200:
                raise TargetError(
                    f"{what} failed with HTTP {response.status_code}: {_error_message(response)}"
                )
            doc = response.json()
            return int(doc["count"] if target.tokenize_url else doc["usage"]["prompt_tokens"])
        except httpx.HTTPError as exc:
            raise TargetError(f"counting prompt tokens failed: {_transport_error(exc)}") from None
        except (ValueError, KeyError, TypeError):
            raise TargetError("the server's token count was not the JSON expected") from None

    # -- one request ----------------------------------------------------------------------

    def body(self, target: Target, messages: Messages, max_tokens: int, ignore_eos: bool) -> bytes:
        doc: dict[str, Any] = {
            "model": target.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if ignore_eos:
            # vLLM's extensions; together they make the output exactly max_tokens long.
            doc["ignore_eos"] = True
            doc["min_tokens"] = max_tokens
        return json.dumps(doc, separators=(",", ":")).encode()

    async def stream(self, record: RequestRecord, body: bytes, keep_text: bool) -> None:
        """Send one streaming request and fill `record`. Never raises except on cancel."""
        parts: list[str] = []
        done = False
        clock = time.perf_counter
        # The least busy shard, so that no shard's pool fills while another's idles.
        busy = self._busy
        shard = 0 if len(busy) == 1 else min(range(len(busy)), key=busy.__getitem__)
        http = self._shards[shard]
        self._busy[shard] += 1

        async def trace(event: str, info: object) -> None:
            # The hook (httpcore's, and LeanTransport's) fires as the request's bytes start
            # down the socket: building the request and taking a pooled connection are the
            # client's time, not the server's, and show up as queue delay.
            if event == "http11.send_request_headers.started":
                record.sent = clock()

        request = http.build_request(
            "POST",
            self._chat_url,
            content=body,
            headers={"Content-Type": "application/json"},
            extensions={"trace": trace},
        )
        try:
            record.sent = clock()  # replaced by the trace hook on HTTP/1.1
            response = await http.send(request, stream=True)
            async with contextlib.aclosing(response):
                record.http_status = response.status_code
                if response.status_code != 200:
                    await response.aread()
                    record.end = clock()
                    record.fail(f"HTTP {response.status_code}", _error_message(response))
                    return
                buffer = b""
                async for raw in response.aiter_raw():
                    now = clock()
                    buffer += raw
                    if b"\r" in buffer:
                        # SSE allows CRLF; a lone trailing \r waits for its \n in the next read.
                        buffer = buffer.replace(b"\r\n", b"\n")
                    if b"\n\n" not in buffer:
                        continue
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        for line in event.split(b"\n"):
                            if not line.startswith(b"data:"):
                                continue
                            data = line[5:].strip()
                            if data == b"[DONE]":
                                done = True
                                continue
                            if not self._on_chunk(record, data, now, parts, keep_text):
                                record.end = clock()
                                return
            record.end = clock()
        except asyncio.CancelledError:
            record.end = clock()
            record.status = "incomplete"
            record.error_type = "cancelled"
            raise
        except httpx.HTTPError as exc:
            record.end = clock()
            record.fail(_transport_error(exc), str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # counted, never fatal: one odd answer must not end a run
            record.end = clock()
            record.fail(f"client error: {type(exc).__name__}", str(exc) or type(exc).__name__)
            return
        finally:
            self._busy[shard] -= 1
        record.text = "".join(parts)
        if not done:
            record.fail("incomplete stream", "the stream ended before data: [DONE]")
        elif record.first_token is None:
            record.fail("empty response", "the stream carried no content")
        else:
            record.status = "ok"
            if record.output_tokens is None:
                # No usage chunk: chunks are the best count there is (low under spec decode).
                record.output_tokens = len(record.chunk_times)
                record.token_source = "chunks"

    @staticmethod
    def _on_chunk(
        record: RequestRecord, data: bytes, now: float, parts: list[str], keep_text: bool
    ) -> bool:
        """Account one SSE payload; False when it is an error event that ends the request."""
        try:
            obj = json.loads(data)
        except ValueError:
            record.fail("bad chunk", f"not JSON: {data[:100]!r}")
            return False
        if not isinstance(obj, dict):
            return True
        if record.response_id is None and isinstance(obj.get("id"), str):
            record.response_id = obj["id"]
        if "error" in obj:
            err = obj["error"]
            kind = err.get("type") or err.get("code") if isinstance(err, dict) else None
            message = err.get("message", err) if isinstance(err, dict) else err
            record.fail(f"stream error: {kind or 'error'}", str(message))
            return False
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            carries = any(delta.get(k) for k in _CONTENT_KEYS) or bool(choice.get("text"))
            if carries:
                if record.first_token is None:
                    record.first_token = now
                record.last_token = now
                record.chunk_times.append(now)
                if keep_text:
                    parts.append(str(delta.get("content") or choice.get("text") or ""))
            if choice.get("finish_reason"):
                record.finish_reason = str(choice["finish_reason"])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            record.prompt_tokens = usage.get("prompt_tokens")
            record.output_tokens = usage.get("completion_tokens")
            record.token_source = "usage"
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            if type(cached) is int and cached >= 0:
                record.cached_tokens = cached
        return True
