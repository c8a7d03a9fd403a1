"""A `sovllm worker` process: the embedded engine behind the worker protocol (pool/wire.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator

import httpx

from sovllm.engines.base import GenerationOutput, GenerationRequest, RequestStream
from sovllm.observability.tracing import traceparent
from sovllm.pool import wire
from sovllm.pool.backends.base import Probe
from sovllm.pool.backends.http import HttpStream, Remote, get_json, send


class WorkerBackend(Remote):
    """A `sovllm worker` process: the embedded engine behind the worker protocol."""

    async def open(self, request: GenerationRequest, prompt_tokens: int) -> RequestStream:
        arrival = time.perf_counter()
        req = self._client.build_request(
            "POST",
            self.url + wire.GENERATE_PATH,
            json=wire.request_to_json(request),
            headers={**self._headers, **traceparent()},  # the worker continues the trace
        )
        response = await send(self._client, req)
        return HttpStream(
            request.request_id, prompt_tokens, response, _worker_lines, arrival, self._stall
        )

    async def probe(self) -> Probe:
        body = await get_json(self._client, self.url + wire.INFO_PATH, self._headers)
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
