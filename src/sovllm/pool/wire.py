"""How a gateway and a sovllm worker exchange engine requests and outputs, as JSON.

The worker protocol carries the engine's own types losslessly (token ids, finish reasons,
engine timings), which the OpenAI API would flatten. Engine times travel as offsets from the
request's arrival, since two processes' monotonic clocks do not compare.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from sovllm.engines.base import (
    ChatMessage,
    EngineStats,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    Timings,
)

GENERATE_PATH = "/v1/engine/generate"
INFO_PATH = "/v1/engine/info"
TOKEN_ENV = "SOVLLM_WORKER_TOKEN"


_SAMPLING_DEFAULTS = dataclasses.asdict(SamplingParams())


def _sampling_to_json(sampling: SamplingParams) -> dict[str, Any]:
    """The fields that differ from their defaults: a worker of an earlier version (a rolling
    upgrade) takes every request that asks for nothing it does not know."""
    fields = dataclasses.asdict(sampling)
    return {
        k: v for k, v in fields.items() if k not in _SAMPLING_DEFAULTS or v != _SAMPLING_DEFAULTS[k]
    }


def request_to_json(request: GenerationRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": request.request_id,
        "sampling": _sampling_to_json(request.sampling),
        "flow": request.flow,
        "weight": request.weight,
    }
    if request.messages is not None:
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    elif isinstance(request.prompt, str):
        body["prompt"] = request.prompt
    elif request.prompt is not None:
        body["prompt"] = list(request.prompt)
    return body


def request_from_json(body: dict[str, Any]) -> GenerationRequest:
    """Raises KeyError, TypeError or ValueError on a malformed body."""
    s = dict(body["sampling"])
    s["stop"] = tuple(s.get("stop", ()))
    s["logit_bias"] = tuple((int(t), float(b)) for t, b in s.get("logit_bias", ()))
    messages = body.get("messages")
    prompt = body.get("prompt")
    return GenerationRequest(
        request_id=str(body["request_id"]),
        sampling=SamplingParams(**s),
        messages=[ChatMessage(str(m["role"]), str(m["content"])) for m in messages]
        if messages is not None
        else None,
        prompt=prompt if isinstance(prompt, str) or prompt is None else [int(t) for t in prompt],
        flow=str(body.get("flow", "")),
        weight=float(body.get("weight", 1.0)),
    )


def output_to_json(out: GenerationOutput) -> dict[str, Any]:
    body: dict[str, Any] = {
        "text": out.text,
        "token_ids": list(out.token_ids),
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
    }
    if out.finish_reason is not None:
        body["finish_reason"] = out.finish_reason
    if out.cached_tokens:
        body["cached_tokens"] = out.cached_tokens
    if out.error is not None:
        body["error"] = out.error
    t = out.timings
    if t is not None:
        body["timings"] = {
            name: getattr(t, name) - t.arrival
            for name in ("scheduled", "first_token", "finished")
            if getattr(t, name) is not None
        }
    return body


def output_from_json(body: dict[str, Any], arrival: float, now: float) -> GenerationOutput:
    """An output as the gateway sees it: engine offsets re-based on the gateway's clock."""
    timings = None
    offsets = body.get("timings")
    if offsets is not None:
        timings = Timings(
            arrival=arrival,
            scheduled=_at(arrival, offsets.get("scheduled")),
            first_token=_at(arrival, offsets.get("first_token")),
            finished=now if "finished" in offsets else None,
        )
    return GenerationOutput(
        text=str(body.get("text", "")),
        token_ids=tuple(int(t) for t in body.get("token_ids", ())),
        prompt_tokens=int(body.get("prompt_tokens", 0)),
        completion_tokens=int(body.get("completion_tokens", 0)),
        finish_reason=cast(FinishReason | None, body.get("finish_reason")),
        timings=timings,
        error=body.get("error"),
        time=now,
        cached_tokens=int(body.get("cached_tokens", 0)),
    )


def _at(arrival: float, offset: float | None) -> float | None:
    return None if offset is None else arrival + float(offset)


def info_to_json(info: ModelInfo, stats: EngineStats) -> dict[str, Any]:
    return {"model": dataclasses.asdict(info), "stats": dataclasses.asdict(stats)}


def info_from_json(body: dict[str, Any]) -> tuple[ModelInfo, EngineStats]:
    model = dict(body["model"])
    known = {f.name for f in dataclasses.fields(ModelInfo)}
    stats = dict(body["stats"])
    known_stats = {f.name for f in dataclasses.fields(EngineStats)}
    return (
        ModelInfo(**{k: v for k, v in model.items() if k in known}),
        EngineStats(**{k: int(v) for k, v in stats.items() if k in known_stats}),
    )
