"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from sovllm.api.auth import (
    ANY_ROLE,
    INFERENCE_ROLES,
    authorize_and_admit,
    check_key_present,
    require,
)
from sovllm.api.errors import APIError
from sovllm.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Usage,
    _SamplingFields,
)
from sovllm.api.state import AppState, app_state
from sovllm.engines.base import (
    ChatMessage,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    RequestStream,
    SamplingParams,
)
from sovllm.governance import quotas
from sovllm.governance.audit import keyed_hash, records
from sovllm.governance.identity import Principal
from sovllm.governance.oversight import Flight, Stop
from sovllm.governance.privacy import pii
from sovllm.governance.privacy.content import NotKept
from sovllm.governance.privacy.erasure import subject_for
from sovllm.governance.privacy.masterkey import MasterKeyError
from sovllm.pool.router import ModelNotServedError, Pool, PoolStream
from sovllm.pool.routing import affinity_key

log = logging.getLogger("sovllm.api")
router = APIRouter()
AI_GENERATED_HEADER = "x-sovllm-ai-generated"
AnyRole = Depends(require(ANY_ROLE))


@router.get("/v1/models")
async def list_models(request: Request, _: Principal = AnyRole) -> ModelList:
    return ModelList(data=[_card(info) for info in app_state(request).pool.models()])


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, _: Principal = AnyRole) -> ModelCard:
    return _card(_model(app_state(request).pool, model_id))


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    gen = GenerationRequest(
        request_id=f"chatcmpl-{uuid.uuid4().hex}",
        sampling=_sampling(body),
        messages=[ChatMessage(m.role, m.text()) for m in body.messages],
    )
    call, run = await _start(request, body, gen)
    if body.stream:
        return _sse(run, call, call.chat_chunk)
    result = await _collect(run)
    info = call.info
    reply = ChatCompletion(
        id=call.id,
        created=call.created,
        model=info.id,
        system_fingerprint=info.sha256,
        choices=[
            ChatChoice(
                message=AssistantMessage(content=result.text), finish_reason=result.finish_reason
            )
        ],
        usage=result.usage,
    )
    return _reply(reply.model_dump(), call)


@router.post("/v1/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    gen = GenerationRequest(
        request_id=f"cmpl-{uuid.uuid4().hex}",
        sampling=_sampling(body),
        prompt=body.prompt_value(),
    )
    call, run = await _start(request, body, gen)
    if body.stream:
        return _sse(run, call, call.completion_chunk)
    result = await _collect(run)
    info = call.info
    reply = Completion(
        id=call.id,
        created=call.created,
        model=info.id,
        system_fingerprint=info.sha256,
        choices=[CompletionChoice(text=result.text, finish_reason=result.finish_reason)],
        usage=result.usage,
    )
    return _reply(reply.model_dump(), call)


async def _start(
    request: Request, body: _SamplingFields, gen: GenerationRequest
) -> tuple[_Call, _Run]:
    """The request path after parsing: identity, policy and admission, then the engine."""
    request.state.request_id = gen.request_id  # what any error answer and its audit entry name
    check_key_present(request)
    state = app_state(request)
    info = _model(state.pool, body.model)
    prompt_tokens = state.pool.count_tokens(info.id, gen)
    budget = body.max_tokens if body.max_tokens is not None else info.context_length - prompt_tokens
    principal, ticket = await authorize_and_admit(
        request, INFERENCE_ROLES, gen.request_id, prompt_tokens + max(budget, 0)
    )
    gen = dataclasses.replace(gen, flow=principal.tenant, weight=principal.tenant_weight)
    sent = gen  # as the client sent it: what the audit record's hash and counts describe
    try:
        # After authentication, so an unauthenticated caller learns nothing of a stop.
        _check_stop(state.oversight.blocking(info.id, principal.tenant))
        if principal.mask_prompts:
            gen = await _masked(request, state, principal, gen)
        key = affinity_key(gen, body.user, request.headers.get("x-session-id"),
                           state.settings.routing.affinity_key)  # fmt: skip
        key = None if key is None else f"{principal.tenant}/{key}"  # caches are per tenant
        stream = await state.pool.open(info.id, gen, key, prompt_tokens,
                                       _queue_timeout(request))  # fmt: skip
    except Exception:
        await to_thread.run_sync(quotas.release, state.db, ticket)
        raise
    try:
        return await _begin(request, body, state, info, principal, ticket, sent, gen, stream,
                            prompt_tokens)  # fmt: skip
    except BaseException:
        stream.close()
        await to_thread.run_sync(quotas.release, state.db, ticket)
        raise


async def _begin(
    request: Request, body: _SamplingFields, state: AppState, info: ModelInfo,
    principal: Principal, ticket: quotas.Ticket, sent: GenerationRequest,
    gen: GenerationRequest, stream: PoolStream, prompt_tokens: int,
) -> tuple[_Call, _Run]:  # fmt: skip
    """The request is on a replica: record its beginning, and track it for the stop switch."""
    audit = state.audit
    vault = state.vault
    policy = vault.cached_policy(principal.tenant_id)
    if policy is None:
        policy = await to_thread.run_sync(vault.policy_of, principal.tenant_id)
    keep = _Keep(subject_for(audit, body.user, principal.key_id), policy)
    begin = audit.append(
        "request.begin",
        records.request_begin(
            principal, request.url.path, info, gen.sampling, prompt_tokens, ticket.reserved_tokens,
            keyed_hash(audit, "prompt", _prompt_text(sent).encode()),
            keyed_hash(audit, "user", body.user.encode()) if body.user else None,
            _pii_counts(sent), policy, masked=principal.mask_prompts,
        ),
        gen.request_id,
    )  # fmt: skip
    if policy != "none":
        _background(to_thread.run_sync(
            _store, state, gen.request_id, keep, "prompt", _prompt_text(gen)
        ))  # fmt: skip
    flight = Flight(info.id, principal.tenant, stream.cancel)
    state.oversight.track(gen.request_id, flight)
    call = _Call(gen.request_id, int(time.time()), info, body.include_usage, ticket.headers,
                 stream, flight)  # fmt: skip
    return call, _Run(stream, request, state, ticket, begin, keep, flight)


@dataclass(frozen=True)
class _Keep:
    """Whose content this is, and what the tenant's policy lets the service keep of it."""

    subject: str
    policy: str


def _prompt_text(gen: GenerationRequest) -> str:
    if gen.messages is not None:
        return "\n".join(f"{m.role}: {m.content}" for m in gen.messages)
    return gen.prompt if isinstance(gen.prompt, str) else json.dumps(list(gen.prompt or []))


async def _masked(
    request: Request, state: AppState, principal: Principal, gen: GenerationRequest
) -> GenerationRequest:
    """The request with personal data masked, for a tenant whose prompts must not carry any.

    Fails closed: a prompt that cannot be checked never reaches the model. Token ids cannot be
    checked (the client's fault: 400); a detector that fails is the server's (503). Either way
    the refusal is an audit entry, durable before the answer leaves, and nothing of the prompt
    is logged: a detector's own error message may quote it.
    """
    refusal = (
        f"Tenant {principal.tenant} requires personal data to be masked before prompts reach "
        "the model"
    )
    try:
        if gen.messages is not None:
            masked = [ChatMessage(m.role, pii.mask(m.content)[0]) for m in gen.messages]
            return dataclasses.replace(gen, messages=masked)
        if isinstance(gen.prompt, str):
            return dataclasses.replace(gen, prompt=pii.mask(gen.prompt)[0])
    except Exception as exc:
        why = pii.describe_failure(exc)
        log.error("request %s refused: masking failed for tenant %s: %s",
                  gen.request_id, principal.tenant, why)  # fmt: skip
        await _rejected(request, state, principal, gen.request_id, "masking_failed")
        raise APIError(
            503, f"{refusal}, and the personal-data check failed on the server, so the prompt "
            f"was not sent to the model. The administrator can find request {gen.request_id} "
            "in the server log and the audit log.", "server_error", code="masking_failed",
        ) from None  # fmt: skip
    await _rejected(request, state, principal, gen.request_id, "token_ids_not_checkable")
    raise APIError(400, f"{refusal}, and this prompt could not be checked: send text, not "
                   "token ids.", param="prompt", code="masking_failed")  # fmt: skip


async def _rejected(
    request: Request, state: AppState, principal: Principal, request_id: str, pii_outcome: str
) -> None:
    """A refusal by the personal-data rule, recorded like a quota's (api/auth.py)."""
    policy = {"quota": "admitted", "pii": pii_outcome, "masked_before_model": False}
    fields = records.request_rejected(principal, request.url.path, policy)
    written = state.audit.append("request.rejected", fields, request_id)
    await asyncio.wrap_future(written)


def _pii_counts(gen: GenerationRequest) -> dict[str, int] | str:
    """Personal data in the prompt, by kind, for the audit record (never the values)."""
    try:
        return dict(Counter(f.kind for f in pii.detect(_prompt_text(gen))))
    except Exception as exc:  # fail closed: say so, log nothing a detector's message quoted
        why = pii.describe_failure(exc)
        log.error("request %s: personal-data detection failed: %s", gen.request_id, why)
        return "detection_failed"


def _store(state: AppState, request_id: str, keep: _Keep, part: str, text: str) -> None:
    """Keep one part under the tenant's policy (in a worker thread).

    Fails closed: a part that cannot be masked under `redacted` is not kept, and the request's
    audit trail says so (`request.content_not_kept`).
    """
    try:
        state.vault.store(request_id, keep.subject, keep.policy, part, text)
    except (NotKept, MasterKeyError) as exc:  # MasterKeyError: e.g. a master rotated meanwhile
        reason = "masking_failed" if isinstance(exc, NotKept) else "master_key"
        log.error("request %s: content not kept: %s", request_id, exc)
        state.audit.append(
            "request.content_not_kept",
            {"part": part, "policy": keep.policy, "reason": reason, "detail": str(exc)},
            request_id,
        ).result(timeout=30)


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


def _reply(body: dict[str, Any], call: _Call) -> JSONResponse:
    body["provenance"] = call.provenance
    if call.stop_note is not None:
        body["sovllm_stop"] = call.stop_note
    return JSONResponse(body, headers=call.headers)


QUEUE_TIMEOUT_HEADER = "x-sovllm-queue-timeout"


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
        raise APIError(400, f"{QUEUE_TIMEOUT_HEADER} must be a positive number of seconds, "
                       f"got {raw!r}", param=QUEUE_TIMEOUT_HEADER)  # fmt: skip
    return value


def _check_stop(stop: Stop | None) -> None:
    if stop is not None:
        raise APIError(503, stop.message(), "service_unavailable", code="service_stopped")


def _model(pool: Pool, name: str) -> ModelInfo:
    try:
        return pool.model(name)
    except ModelNotServedError as exc:
        raise APIError(404, str(exc), param="model", code="model_not_found") from None


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
    )


class _Run:
    """One admitted request from its stream's opening to its settlement, ended exactly once.

    `outputs()` passes the engine's outputs on with metrics, cancelled if the client leaves.
    The request's begin entry in the audit log is durable before its first token leaves.
    Usage is settled before the final output is passed on, so a client's next request already
    sees this one's tokens and a free concurrency slot. `end()` is the one place a request is
    let go of; it also runs for a response whose body never started (a client gone first).
    """

    def __init__(
        self, stream: PoolStream, request: Request, state: AppState, ticket: quotas.Ticket,
        begin: concurrent.futures.Future[int], keep: _Keep, flight: Flight,
    ) -> None:  # fmt: skip
        self.stream, self._request, self._state = stream, request, state
        self._ticket, self._begin, self._keep, self._flight = ticket, begin, keep, flight
        self._last: GenerationOutput | None = None
        self._text: list[str] = []
        self._ended = False
        self._failed = False

    async def outputs(self) -> AsyncGenerator[GenerationOutput, None]:
        state, flight, stream = self._state, self._flight, self.stream
        watcher = asyncio.create_task(_cancel_on_disconnect(self._request, stream))
        previous: float | None = None
        try:
            async for out in stream:
                if self._last is None:
                    await asyncio.wrap_future(self._begin)
                if out.finish_reason == "abort" and flight.stopped_by is not None:
                    out = dataclasses.replace(out, finish_reason="stop")  # cut by the stop switch
                self._last = out
                self._text.append(out.text)
                state.metrics.observe_token(flight.model, previous, out)
                if out.token_ids:
                    previous = out.time
                if out.finished:
                    state.metrics.observe_finished(flight.model, out)
                    self._ended = True
                    await to_thread.run_sync(
                        quotas.settle, state.db, self._ticket, out.prompt_tokens,
                        out.completion_tokens,
                    )  # fmt: skip
                    self._finish(out, "stopped" if flight.stopped_by is not None else None)
                yield out
        except Exception:
            self._failed = True  # failsafe.RequestGuard answers it; request.end says "error"
            raise
        finally:
            watcher.cancel()
            self.end()

    def end(self) -> None:
        """Let go of the request if it has not ended: the client left (idempotent)."""
        self.stream.close()
        if self._ended:
            return
        self._ended = True
        # Settle in the background with what was generated so far.
        used = self._last.completion_tokens if self._last is not None else 0
        _background(to_thread.run_sync(
            quotas.settle, self._state.db, self._ticket, self.stream.prompt_tokens, used
        ))  # fmt: skip
        self._finish(self._last, "error" if self._failed else "client_disconnected")

    def _finish(self, out: GenerationOutput | None, outcome: str | None) -> None:
        self._state.oversight.untrack(self.stream.request_id)
        _audit_end(self._state, self.stream.request_id, out, "".join(self._text), self._keep,
                   outcome)  # fmt: skip


_tasks: set[asyncio.Task[None]] = set()


def _background(work: Awaitable[object]) -> None:
    async def run() -> None:
        try:
            await work
        except Exception:
            log.exception("background work for a request failed")

    task = asyncio.get_running_loop().create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _audit_end(
    state: AppState, request_id: str, out: GenerationOutput | None, text: str, keep: _Keep,
    outcome: str | None = None,
) -> None:  # fmt: skip
    if outcome is None:
        outcome = "error" if out is not None and out.error else "completed"
    digest = keyed_hash(state.audit, "response", text.encode())
    fields = records.request_end(out, outcome, digest, keep.policy)
    state.audit.append("request.end", fields, request_id)
    if keep.policy != "none":
        _background(to_thread.run_sync(_store, state, request_id, keep, "response", text))


async def _cancel_on_disconnect(request: Request, stream: RequestStream) -> None:
    # The body has been read, so the server's receive() now returns only on disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            stream.cancel()
            return


@dataclass
class _Result:
    text: str
    finish_reason: str | None
    usage: Usage


async def _collect(run: _Run) -> _Result:
    parts: list[str] = []
    last: GenerationOutput | None = None
    outputs = run.outputs()
    try:
        async for out in outputs:
            if out.error is not None:
                raise APIError(503, out.error, "server_error", code="engine_error")
            parts.append(out.text)
            last = out
    finally:
        await outputs.aclose()
        run.end()
    assert last is not None
    return _Result("".join(parts), last.finish_reason, _usage(last))


def _usage(out: GenerationOutput) -> Usage:
    return Usage(
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        total_tokens=out.prompt_tokens + out.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=out.cached_tokens),
    )


@dataclass(frozen=True)
class _Call:
    id: str
    created: int
    info: ModelInfo
    include_usage: bool
    ratelimit: quotas.RateLimitHeaders
    stream: PoolStream
    flight: Flight

    @property
    def headers(self) -> dict[str, str]:
        # AI Act Art. 50(2): generated output is marked, machine-readably, on every response.
        # The replica that answered (for a stream: that took it; a failover can move it).
        replica = self.stream.replica.name if self.stream.replica is not None else ""
        return {"x-request-id": self.id, AI_GENERATED_HEADER: "true",
                "x-sovllm-replica": replica, **self.ratelimit.as_dict()}  # fmt: skip

    @property
    def stop_note(self) -> dict[str, object] | None:
        """Why the answer ended early, when an administrator cut it."""
        stop = self.flight.stopped_by
        return None if stop is None else {"message": stop.message(), **stop.as_dict()}

    @property
    def provenance(self) -> dict[str, Any]:
        return {
            "ai_generated": True,
            "model": self.info.id,
            "weights_sha256": self.info.sha256,
            "request_id": self.id,
            "created": self.created,
        }

    def _base(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.info.id,
            "system_fingerprint": self.info.sha256,
        }

    def chat_chunk(self, text: str | None, first: bool, finish: str | None) -> dict[str, Any]:
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        chunk = self._base("chat.completion.chunk")
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return chunk

    def completion_chunk(self, text: str | None, first: bool, finish: str | None) -> dict[str, Any]:
        chunk = self._base("text_completion")
        chunk["choices"] = [
            {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        ]
        return chunk

    def usage_chunk(self, obj: str, out: GenerationOutput) -> dict[str, Any]:
        chunk = self._base(obj)
        chunk["choices"] = []
        chunk["usage"] = _usage(out).model_dump()
        return chunk


ChunkFn = Callable[[str | None, bool, str | None], dict[str, Any]]


def _sse(run: _Run, call: _Call, make: ChunkFn) -> StreamingResponse:
    return _RunResponse(
        run,
        _sse_events(run.outputs(), call, make),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **call.headers},
    )


class _RunResponse(StreamingResponse):
    """Ends the request even when the body never starts (the client left before it)."""

    def __init__(self, run: _Run, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run = run

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._run.end()


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _sse_events(
    outputs: AsyncGenerator[GenerationOutput, None], call: _Call, make: ChunkFn
) -> AsyncIterator[str]:
    """One chunk per step of text. The role rides on the first token's chunk, never alone."""
    first = True
    try:
        async for out in outputs:
            if out.error is not None:
                error = APIError(503, out.error, "server_error", code="engine_error")
                yield f"data: {error.sse_payload()}\n\n"
                break
            if out.finish_reason == "abort":
                return
            if not out.text and not out.finished:
                continue  # part of a UTF-8 character or a possible stop string: nothing to show
            chunk = make(out.text if out.text or first else None, first, out.finish_reason)
            if first:
                chunk["provenance"] = call.provenance
            if call.include_usage:
                chunk["usage"] = None
            first = False
            if out.finished and call.stop_note is not None:
                chunk["sovllm_stop"] = call.stop_note
                yield f": {call.stop_note['message']}\n\n"
            yield _event(chunk)
            if out.finished and call.include_usage:
                yield _event(call.usage_chunk(chunk["object"], out))
        yield "data: [DONE]\n\n"
    finally:
        await outputs.aclose()
