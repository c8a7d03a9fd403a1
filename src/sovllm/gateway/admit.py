"""Admission: one parsed request through identity, the stop switch, the tenant's policy,
admission and the router, to a replica, with its beginning in the audit log.

The order is fixed. Identity first, so an unauthenticated caller learns nothing of a stop; then
the stop switch and the policy, before anything is written; then admission, which reserves the
quota; then the router. Identity, the stop, the policy's decision and admission are one
database transaction (`quotas.authorize_and_admit` with a gate), the request path's single
database trip. The personal-data detector itself runs after admission: it is CPU work that must
not hold the key's lock, and a detector that fails releases the admission.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass

from anyio import to_thread

from sovllm.engines.base import ChatMessage, ContextLengthError, GenerationRequest, ModelInfo
from sovllm.gateway.content import Keep, prompt_text, store
from sovllm.gateway.errors import MaskingFailed, PromptNotCheckable, Stopped
from sovllm.gateway.state import AppState
from sovllm.governance import quotas, review
from sovllm.governance.audit import keyed_hash, records
from sovllm.governance.identity import Principal, Role
from sovllm.governance.oversight import Flight
from sovllm.governance.privacy import pii
from sovllm.governance.privacy.erasure import subject_for
from sovllm.observability import tracing
from sovllm.observability.tracing import RequestTrace
from sovllm.pool.routing import affinity_key
from sovllm.pool.stream import PoolStream

log = logging.getLogger("sovllm.gateway")

INFERENCE_ROLES = frozenset({Role.USER, Role.ADMIN})


@dataclass(frozen=True)
class Call:
    """One parsed inference request, as plain data: what the client asked for and with what key."""

    gen: GenerationRequest
    """The request id, sampling and prompt as the client sent them."""
    model: str
    route: str
    credential: str | None
    """The API key as presented (checked for its shape by the caller)."""
    max_tokens: int | None
    user: str | None = None
    """OpenAI's `user` field: the end user, stored only as a pseudonym."""
    session: str | None = None
    """The `x-session-id` header, for prefix-affinity routing."""
    queue_timeout_s: float | None = None
    stream: bool = False
    """The answer is streamed (a tenant that holds answers for review refuses that)."""


@dataclass(frozen=True)
class Admitted:
    """A request on a replica: admitted, begun in the audit log and tracked by the stop switch.

    Whoever holds it must end it (`run.Run`), which settles the ticket and writes the end.
    """

    call: Call
    principal: Principal
    ticket: quotas.Ticket
    info: ModelInfo
    stream: PoolStream
    flight: Flight
    keep: Keep
    begin: concurrent.futures.Future[int]
    """The `request.begin` entry's write: durable before the first token leaves."""
    created: int
    trace: RequestTrace
    """The request's span (no-op unless telemetry is on), ended with its `request.end`."""


async def admit(state: AppState, call: Call) -> Admitted:
    """Identity → stop → policy → admission → router, then the request's beginning.

    Raises the refusal of the first step that refuses (gateway/errors.py lists them); whatever
    was reserved by then is released, and a refusal after authentication is in the audit log,
    durable, before this raises.
    """
    chat = call.gen.messages is not None
    trace = tracing.start_request(state.telemetry, chat, call.model, call.gen.sampling)
    try:
        with trace.current():  # the replica gets the request span's `traceparent`
            return await _admit(state, call, trace)
    except BaseException as exc:
        trace.refused(exc)
        raise


async def _admit(state: AppState, call: Call, trace: RequestTrace) -> Admitted:
    info = state.pool.model(call.model)
    prompt_tokens = state.pool.count_tokens(info.id, call.gen)
    budget = info.context_length - prompt_tokens if call.max_tokens is None else call.max_tokens
    with trace.child("admission"):
        reserved = prompt_tokens + max(budget, 0)
        principal, ticket = await _identify_and_admit(state, call, info, prompt_tokens, reserved)
    sent = dataclasses.replace(call.gen, flow=principal.tenant, weight=principal.tenant_weight)
    try:
        gen = await _masked(state, call, principal, sent) if principal.mask_prompts else sent
        key = affinity_key(gen, call.user, call.session, state.settings.routing.affinity_key)
        key = None if key is None else f"{principal.tenant}/{key}"  # caches are per tenant
        stream = await state.pool.open(info.id, gen, key, prompt_tokens, call.queue_timeout_s)
    except BaseException:
        await to_thread.run_sync(quotas.release, state.db, ticket)
        raise
    replica = stream.replica.name if stream.replica is not None else None
    trace.admitted(call.gen.request_id, info.id, principal.tenant, replica)
    try:
        begun = _Begun(call, info, principal, ticket, sent, gen, stream, prompt_tokens, trace)
        return await _begin(state, begun)
    except BaseException:
        stream.close()
        await to_thread.run_sync(quotas.release, state.db, ticket)
        raise


async def _identify_and_admit(
    state: AppState, call: Call, info: ModelInfo, prompt_tokens: int, reserved: int
) -> tuple[Principal, quotas.Ticket]:
    """Identity, the stop switch, the policy's decision and admission: one transaction."""

    def gate(principal: Principal) -> None:
        stop = state.oversight.blocking(info.id, principal.tenant)
        if stop is not None:
            raise Stopped(stop)
        if principal.mask_prompts and not _checkable(call.gen):
            raise PromptNotCheckable(principal)
        review.check_holdable(principal, call.stream, call.gen.messages is not None)
        if 0 < info.context_length < prompt_tokens + (call.max_tokens or 1):
            # The engine's own rule, before admission: a request no replica can run is the
            # client's 400 with both numbers, not a quota's 429 for tokens it could not use.
            # 0: a replica that does not say its context (llama-server) checks it itself.
            raise ContextLengthError(prompt_tokens, call.max_tokens or 0, info.context_length)

    request_id = call.gen.request_id
    try:
        return await to_thread.run_sync(
            quotas.authorize_and_admit,
            state.db,
            call.credential,
            INFERENCE_ROLES,
            request_id,
            reserved,
            gate,
        )
    except quotas.QuotaExceeded as exc:
        if exc.principal is not None:
            # Durable before the refusal goes out, like every decision the log records.
            fields = records.request_rejected(
                exc.principal, call.route, {"quota": exc.code}, reserved
            )
            await asyncio.wrap_future(state.audit.append(records.REJECTED, fields, request_id))
        raise
    except PromptNotCheckable as exc:
        # Refused before admission: no quota was looked at.
        policy = {
            "quota": "not_checked",
            "pii": "token_ids_not_checkable",
            "masked_before_model": False,
        }
        fields = records.request_rejected(exc.principal, call.route, policy)
        await asyncio.wrap_future(state.audit.append(records.REJECTED, fields, request_id))
        raise
    except review.NotHoldable as exc:  # refused before admission, like the one above
        policy = {"quota": "not_checked", "review": "hold_needs_non_streamed_chat"}
        fields = records.request_rejected(exc.principal, call.route, policy)
        await asyncio.wrap_future(state.audit.append(records.REJECTED, fields, request_id))
        raise


def _checkable(gen: GenerationRequest) -> bool:
    """Whether the personal-data check can read the prompt (text, not token ids)."""
    return gen.messages is not None or isinstance(gen.prompt, str)


async def _masked(
    state: AppState, call: Call, principal: Principal, gen: GenerationRequest
) -> GenerationRequest:
    """The request with personal data masked, for a tenant whose prompts must not carry any.

    Fails closed: a detector that fails means the prompt never reaches the model. The refusal
    is an audit entry, durable before the answer leaves, and nothing of the prompt is logged:
    a detector's own error message may quote it.
    """
    try:
        if gen.messages is not None:
            masked = [ChatMessage(m.role, pii.mask(m.content)[0]) for m in gen.messages]
            return dataclasses.replace(gen, messages=masked)
        assert isinstance(gen.prompt, str)  # the gate refused token ids
        return dataclasses.replace(gen, prompt=pii.mask(gen.prompt)[0])
    except Exception as exc:
        why = pii.describe_failure(exc)
        log.error(
            "request %s refused: masking failed for tenant %s: %s",
            gen.request_id,
            principal.tenant,
            why,
        )
        policy = {"quota": "admitted", "pii": "masking_failed", "masked_before_model": False}
        fields = records.request_rejected(principal, call.route, policy)
        await asyncio.wrap_future(state.audit.append(records.REJECTED, fields, gen.request_id))
        raise MaskingFailed(principal.tenant, gen.request_id) from None


def _pii_counts(gen: GenerationRequest) -> dict[str, int] | str:
    """Personal data in the prompt, by kind, for the audit record (never the values)."""
    try:
        return dict(Counter(f.kind for f in pii.detect(prompt_text(gen))))
    except Exception as exc:  # fail closed: say so, log nothing a detector's message quoted
        why = pii.describe_failure(exc)
        log.error("request %s: personal-data detection failed: %s", gen.request_id, why)
        return "detection_failed"


@dataclass(frozen=True)
class _Begun:
    """A request just put on a replica, for `_begin`.

    `sent` is the request as the client sent it (what the audit entry's hash and counts
    describe); `gen` as it goes to the model (masked), which is what the content policy keeps.
    """

    call: Call
    info: ModelInfo
    principal: Principal
    ticket: quotas.Ticket
    sent: GenerationRequest
    gen: GenerationRequest
    stream: PoolStream
    prompt_tokens: int
    trace: RequestTrace


async def _begin(state: AppState, b: _Begun) -> Admitted:
    """The request is on a replica: record its beginning, and track it for the stop switch."""
    call, info, principal, ticket, sent, gen = b.call, b.info, b.principal, b.ticket, b.sent, b.gen
    stream, prompt_tokens = b.stream, b.prompt_tokens
    audit, vault = state.audit, state.vault
    policy = vault.cached_policy(principal.tenant_id)
    if policy is None:
        policy = await to_thread.run_sync(vault.policy_of, principal.tenant_id)
    keep = Keep(subject_for(audit, call.user, principal.key_id), policy)
    text = prompt_text(sent)
    begin = records.Begin(
        principal=principal,
        route=call.route,
        model=info,
        sampling=sent.sampling,
        prompt_tokens=prompt_tokens,
        reserved_tokens=ticket.reserved_tokens,
        prompt_hash=keyed_hash(audit, "prompt", text.encode()),
        user_pseudonym=keyed_hash(audit, "user", call.user.encode()) if call.user else None,
        pii_found=_pii_counts(sent),
        content_policy=policy,
        masked=principal.mask_prompts,
    )
    written = audit.append(records.BEGIN, records.request_begin(begin), sent.request_id)
    if policy != "none":
        work = to_thread.run_sync(store, state, sent.request_id, keep, "prompt", prompt_text(gen))
        state.background.add(work)
    flight = Flight(info.id, principal.tenant, stream.cancel)
    state.oversight.track(sent.request_id, flight)
    created = int(time.time())
    return Admitted(call, principal, ticket, info, stream, flight, keep, written, created, b.trace)
