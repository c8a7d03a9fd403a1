"""What the HTTP backends share: a request's stream read off a response by a reader task, the
sending of a request, a probe's GET, and what a replica's error answer means.

A stream that breaks because its replica failed ends with a ReplicaFailure, so the router can
retry the request elsewhere when no token has reached the client yet; a request the replica
refused raises an EngineError.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from sovllm.engines.base import (
    EngineStats,
    GenerationOutput,
    InvalidRequestError,
    QueueFullError,
)
from sovllm.pool.backends.base import ReplicaFailure, aborted, replica_failure

log = logging.getLogger("sovllm.pool")

Parse = Callable[[httpx.Response, float], AsyncIterator[GenerationOutput]]
"""Reads a response's outputs, given the request's arrival time."""


class HttpStream:
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
        parse: Parse,
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

    async def _read(self, response: httpx.Response, parse: Parse) -> None:
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
        self._end(aborted(self.prompt_tokens, self._completion, self._arrival))

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


async def send(client: httpx.AsyncClient, req: httpx.Request) -> httpx.Response:
    """Send a request for a streamed answer; an error answer raises what it means."""
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
        param = error.get("param")
        return InvalidRequestError(
            message or f"the replica refused the request ({status})",
            param if isinstance(param, str) else None,
        )
    return ReplicaFailure(f"HTTP {status}: {message}", hard=False)


async def get(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    """A probe's GET: a lost connection is a hard failure, any answer but 200 a soft one."""
    try:
        response = await client.get(url, headers=headers)
    except Exception as exc:
        raise replica_failure(exc, f"GET {url}") from None
    if response.status_code != 200:
        raise ReplicaFailure(f"{url} answered HTTP {response.status_code}", hard=False)
    return response


async def get_json(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Any:
    response = await get(client, url, headers)
    try:
        return response.json()
    except ValueError:
        raise ReplicaFailure(f"{url} answered with something other than JSON", hard=False) from None


class Remote:
    """What HTTP backends share: nothing runs in this process; what they know comes by probe."""

    def __init__(
        self,
        url: str,
        token: str | None,
        client: httpx.AsyncClient,
        stall_timeout_s: float | None = None,
    ) -> None:
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
