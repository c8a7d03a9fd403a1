"""Any OpenAI-compatible server (vLLM, llama.cpp's server, SGLang, another sovllm): the
request body it takes, the SSE stream it answers with, and vLLM's own gauges."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from sovllm.engines.base import (
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    RequestStream,
    Timings,
)
from sovllm.observability.tracing import traceparent
from sovllm.pool.backends.base import Probe, ReplicaFailure
from sovllm.pool.backends.http import HttpStream, Remote, get, get_json, send


class OpenAIBackend(Remote):
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
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
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
        headers = {**self._headers, **traceparent()}  # vLLM continues the trace
        req = self._client.build_request("POST", self.url + path, json=body, headers=headers)
        response = await send(self._client, req)
        chat = request.messages is not None

        def parse(response: httpx.Response, arrival: float) -> AsyncIterator[GenerationOutput]:
            return _sse_outputs(response, arrival, prompt_tokens, chat)

        return HttpStream(request.request_id, prompt_tokens, response, parse, arrival, self._stall)

    async def probe(self) -> Probe:
        if self._health_url is not None:
            await get(self._client, self._health_url, self._headers)
        body = await get_json(self._client, self.url + "/models", self._headers)
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
            timings = Timings(arrival, arrival, first, now)
            reason = _finish(finish)
            yield GenerationOutput(
                "", (), prompt_tokens, completion, reason, timings, time=now, cached_tokens=cached
            )
            return
        chunk = json.loads(data)
        if "error" in chunk:
            message = str(chunk["error"].get("message", chunk["error"]))
            timings = Timings(arrival, arrival, first, now)
            yield GenerationOutput(
                "", (), prompt_tokens, completion, "error", timings, message, now
            )
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
        running=int(values["running"]),
        waiting=int(values["waiting"]),
        slots=0,
        max_waiting=0,
        prefix_cache_queries=int(values["prefix_cache_queries"]),
        prefix_cache_hits=int(values["prefix_cache_hits"]),
    )
