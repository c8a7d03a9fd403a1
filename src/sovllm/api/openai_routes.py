"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models.

What is here is HTTP: parsing a request into the gateway's plain `Call`, watching for the client
leaving, and framing the answer (JSON, or server-sent events). The request's life itself
(identity, the stop switch, policy, admission, routing, settlement, audit) is the gateway's:
`gateway.admit.admit` and `gateway.run.Run`.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from sovllm.api.auth import ANY_ROLE, bearer, check_key_present, require
from sovllm.api.errors import APIError, engine_failed
from sovllm.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    Delta,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Provenance,
    Usage,
    _Answer,
    _SamplingFields,
)
from sovllm.api.state import app_state
from sovllm.api.stored_completions import held_response
from sovllm.engines.base import (
    ChatMessage,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
)
from sovllm.gateway.admit import Admitted, Call, admit
from sovllm.gateway.run import Run
from sovllm.governance.identity import Principal
from sovllm.observability import logs

router = APIRouter()
AI_GENERATED_HEADER = "x-sovllm-ai-generated"
QUEUE_TIMEOUT_HEADER = "x-sovllm-queue-timeout"
AnyRole = Depends(require(ANY_ROLE))
# A route dependency runs before FastAPI validates the body: a client without a usable key is
# told so (401), not what is wrong with a body it may not send at all.
KeyPresent = [Depends(check_key_present)]


@router.get("/v1/models")
async def list_models(request: Request, _: Principal = AnyRole) -> ModelList:
    return ModelList(data=[_card(info) for info in app_state(request).pool.models()])


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, _: Principal = AnyRole) -> ModelCard:
    return _card(app_state(request).pool.model(model_id))


@router.post("/v1/chat/completions", response_model=None, dependencies=KeyPresent)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    gen = GenerationRequest(
        request_id=f"chatcmpl-{uuid.uuid4().hex}",
        sampling=_sampling(body),
        messages=[ChatMessage(m.role, m.text()) for m in body.messages],
    )
    run, answer = await _start(request, body, gen)
    if body.stream:
        return _sse(request, run, answer, _chat_chunk)
    result = await _collect(request, run)
    if run.held is not None:  # the tenant holds answers for review: this one is not sent
        await run.held
        pending = ChatCompletion(**answer.fields(), choices=[], usage=result.usage)
        return held_response(pending.body(), answer.headers)
    message = AssistantMessage(content=result.text)
    choice = ChatChoice(message=message, finish_reason=result.finish_reason)
    reply = ChatCompletion(**answer.fields(), choices=[choice], usage=result.usage)
    return JSONResponse(reply.body(), headers=answer.headers)


@router.post("/v1/completions", response_model=None, dependencies=KeyPresent)
async def completions(
    body: CompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    gen = GenerationRequest(
        request_id=f"cmpl-{uuid.uuid4().hex}",
        sampling=_sampling(body),
        prompt=body.prompt_value(),
    )
    run, answer = await _start(request, body, gen)
    if body.stream:
        return _sse(request, run, answer, _completion_chunk)
    result = await _collect(request, run)
    choice = CompletionChoice(text=result.text, finish_reason=result.finish_reason)
    reply = Completion(**answer.fields(), choices=[choice], usage=result.usage)
    return JSONResponse(reply.body(), headers=answer.headers)


async def _start(
    request: Request, body: _SamplingFields, gen: GenerationRequest
) -> tuple[Run, _AnswerInfo]:
    """From the parsed request to a run on a replica (gateway/admit.py does the work)."""
    request.state.request_id = gen.request_id  # what any error answer and its audit entry name
    logs.bind_request(gen.request_id)  # and every log line written for it (log_format: json)
    call = Call(
        gen=gen,
        model=body.model,
        route=request.url.path,
        credential=bearer(request),
        max_tokens=body.max_tokens,
        user=body.user,
        session=request.headers.get("x-session-id"),
        queue_timeout_s=_queue_timeout(request),
        stream=body.stream,
    )
    state = app_state(request)
    admitted = await admit(state, call)
    return Run(state, admitted), _AnswerInfo(admitted, body.include_usage)


# -- helpers -----------------------------------------------------------------------------


def _card(info: ModelInfo) -> ModelCard:
    return ModelCard(
        id=info.id,
        created=info.created,
        owned_by=info.owned_by,
        sha256=info.sha256,
        context_length=info.context_length,
        metadata=info.metadata,
    )


def _queue_timeout(request: Request) -> float | None:
    """The client's own limit on the wait for a first token, in seconds (header)."""
    raw = request.headers.get(QUEUE_TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:
        message = f"{QUEUE_TIMEOUT_HEADER} must be a positive number of seconds, got {raw!r}"
        raise APIError(400, message, param=QUEUE_TIMEOUT_HEADER)
    return value


def _sampling(body: _SamplingFields) -> SamplingParams:
    return SamplingParams(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=body.seed,
        stop=body.stop_list(),
        ignore_eos=body.ignore_eos,
        min_tokens=body.min_tokens,
        logit_bias=tuple((int(k), float(v)) for k, v in (body.logit_bias or {}).items()),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
    )


@dataclass(frozen=True)
class _AnswerInfo:
    """What every part of one answer says besides its text: ids, model, headers, marking."""

    admitted: Admitted
    include_usage: bool

    @property
    def headers(self) -> dict[str, str]:
        # AI Act Art. 50(2): generated output is marked, machine-readably, on every response.
        # The replica that answered (for a stream: that took it; a failover can move it).
        replica = self.admitted.stream.replica
        return {
            "x-request-id": self.admitted.stream.request_id,
            AI_GENERATED_HEADER: "true",
            "x-sovllm-replica": replica.name if replica is not None else "",
            **self.admitted.ticket.headers.as_dict(),
        }

    @property
    def stop_note(self) -> dict[str, Any] | None:
        """Why the answer ended early, when an administrator cut it."""
        stop = self.admitted.flight.stopped_by
        return None if stop is None else {"message": stop.message(), **stop.as_dict()}

    def provenance(self) -> Provenance:
        a = self.admitted
        return Provenance(
            model=a.info.id,
            weights_sha256=a.info.sha256,
            request_id=a.stream.request_id,
            created=a.created,
        )

    def fields(self, provenance: bool = True, stop: bool = True) -> dict[str, Any]:
        a = self.admitted
        return {
            "id": a.stream.request_id,
            "created": a.created,
            "model": a.info.id,
            "system_fingerprint": a.info.sha256,
            "provenance": self.provenance() if provenance else None,
            "sovllm_stop": self.stop_note if stop else None,
        }


ChunkFn = Callable[[_AnswerInfo, str | None, bool, str | None], _Answer]


def _chat_chunk(answer: _AnswerInfo, text: str | None, first: bool, finish: str | None) -> _Answer:
    delta = Delta(role="assistant" if first else None, content=text)
    choice = ChatChunkChoice(delta=delta, finish_reason=finish)
    fields = answer.fields(provenance=first, stop=finish is not None)
    return ChatCompletionChunk(**fields, choices=[choice])


def _completion_chunk(
    answer: _AnswerInfo, text: str | None, first: bool, finish: str | None
) -> _Answer:
    choice = CompletionChoice(text=text or "", finish_reason=finish)
    fields = answer.fields(provenance=first, stop=finish is not None)
    return CompletionChunk(**fields, choices=[choice])


def _usage(out: GenerationOutput) -> Usage:
    return Usage(
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        total_tokens=out.prompt_tokens + out.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=out.cached_tokens),
    )


async def _watched(request: Request, run: Run) -> AsyncGenerator[GenerationOutput, None]:
    """The run's outputs, cancelled if the client leaves."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, run))
    outputs = run.outputs()
    try:
        async for out in outputs:
            yield out
    finally:
        watcher.cancel()
        await outputs.aclose()


async def _cancel_on_disconnect(request: Request, run: Run) -> None:
    # The body has been read, so the server's receive() now returns only on disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            run.cancel()
            return


@dataclass
class _Result:
    text: str
    finish_reason: str | None
    usage: Usage


async def _collect(request: Request, run: Run) -> _Result:
    parts: list[str] = []
    last: GenerationOutput | None = None
    outputs = _watched(request, run)
    try:
        async for out in outputs:
            if out.error is not None:
                raise engine_failed(out.error)
            parts.append(out.text)
            last = out
    finally:
        await outputs.aclose()
        run.end()
    assert last is not None
    return _Result("".join(parts), last.finish_reason, _usage(last))


def _sse(request: Request, run: Run, answer: _AnswerInfo, make: ChunkFn) -> StreamingResponse:
    return _RunResponse(
        run,
        _sse_events(_watched(request, run), answer, make),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **answer.headers},
    )


class _RunResponse(StreamingResponse):
    """Ends the request even when the body never starts (the client left before it)."""

    def __init__(self, run: Run, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run = run

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self._run.begun()  # the 200 goes out once the begin entry is durable
            await super().__call__(scope, receive, send)
        finally:
            self._run.end()


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _event(data: dict[str, Any]) -> str:
    return f"data: {_encode(data)}\n\n"


class _TextEvent:
    """The event of a chunk in the middle of a stream, encoded once but for its text.

    Those chunks differ only in their text: the model builds and encodes the first one with a
    mark in place of the text, and each token then encodes only its text into that frame (the
    same bytes as the model's, tests/unit/test_sse_chunks.py). The event loop's time per
    token is taken from a decoding thread (docs/performance.md, "Session 14")."""

    MARK = "\x00sovllm-text\x00"

    def __init__(self, data: dict[str, Any]) -> None:
        event = _event(data)
        mark = _encode(self.MARK)[1:-1]
        self._head, found, self._tail = event.partition(mark)
        if not found or mark in self._tail:
            raise ValueError("the chunk must hold its text exactly once")

    def __call__(self, text: str) -> str:
        return f"{self._head}{_encode(text)[1:-1]}{self._tail}"


def _chunk_body(chunk: _Answer, answer: _AnswerInfo) -> dict[str, Any]:
    data = chunk.body()
    if not answer.include_usage:
        data.pop("usage", None)
    return data


async def _sse_events(
    outputs: AsyncGenerator[GenerationOutput, None], answer: _AnswerInfo, make: ChunkFn
) -> AsyncIterator[str]:
    """One chunk per step of text. The role rides on the first token's chunk, never alone."""
    first = True
    middle: _TextEvent | None = None
    try:
        async for out in outputs:
            if out.error is not None:
                yield f"data: {engine_failed(out.error).sse_payload()}\n\n"
                break
            if out.finish_reason == "abort":
                return
            if not out.text and not out.finished:
                continue  # part of a UTF-8 character or a possible stop string: nothing to show
            if not first and not out.finished:
                if middle is None:
                    middle = _TextEvent(
                        _chunk_body(make(answer, _TextEvent.MARK, False, None), answer)
                    )
                yield middle(out.text)
                continue
            chunk = make(answer, out.text if out.text or first else None, first, out.finish_reason)
            first = False
            data = _chunk_body(chunk, answer)
            if out.finished and answer.stop_note is not None:
                yield f": {answer.stop_note['message']}\n\n"
            yield _event(data)
            if out.finished and answer.include_usage:
                usage = make(answer, None, False, None).model_copy(
                    update={"choices": [], "usage": _usage(out), "sovllm_stop": None}
                )
                yield _event(usage.body())
        yield "data: [DONE]\n\n"
    finally:
        await outputs.aclose()
