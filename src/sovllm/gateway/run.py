"""One admitted request from its stream's first output to its settlement, ended exactly once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
from collections.abc import AsyncGenerator

from anyio import to_thread

from sovllm.engines.base import GenerationOutput
from sovllm.gateway import review_queue
from sovllm.gateway.admit import Admitted
from sovllm.gateway.content import Keep, store
from sovllm.gateway.state import AppState
from sovllm.governance import quotas
from sovllm.governance.audit import keyed_hash, records
from sovllm.observability.energy import Energy
from sovllm.store.db import Database

log = logging.getLogger("sovllm.gateway")


class Run:
    """`outputs()` passes the engine's outputs on with metrics.

    The request's begin entry in the audit log is durable before its first output is passed
    on. Usage is settled before the final output is passed on, so a client's next request
    already sees this one's tokens and a free concurrency slot, and after the end entry is
    durable (`_settle_after`). `end()` is the one place a
    request is let go of; it also runs for a response whose body never started (a client gone
    first). Watching the client is the caller's: it calls `cancel()` when the client leaves.
    """

    def __init__(self, state: AppState, admitted: Admitted) -> None:
        self.state, self.admitted = state, admitted
        self.stream = admitted.stream
        self._last: GenerationOutput | None = None
        self._text: list[str] = []
        self._ended = False
        self._failed = False
        self._energy: Energy | None = None
        # In flight from now: a replica's queueing and prefill count for it (energy meter).
        state.energy.tokens(self.stream.request_id, 0)
        self.held: asyncio.Task[None] | None = None
        """Under a review policy of hold: the answer's sealing (gateway/review_queue.py)."""

    def cancel(self) -> None:
        """The client left: stop generating (the output stream then ends with `abort`)."""
        self.stream.cancel()

    async def begun(self) -> None:
        """Wait until the begin entry is durable: a streamed answer's 200 waits for it, so a
        client that holds a request id has its beginning in the log whatever crashes next."""
        try:
            await asyncio.wrap_future(self.admitted.begin)
        except Exception:
            self._failed = True  # the caller's end() then says "error"
            raise

    async def outputs(self) -> AsyncGenerator[GenerationOutput, None]:
        state, flight = self.state, self.admitted.flight
        previous: float | None = None
        try:
            async for out in self.stream:
                if self._last is None:
                    await asyncio.wrap_future(self.admitted.begin)
                if out.finish_reason == "abort" and flight.stopped_by is not None:
                    out = dataclasses.replace(out, finish_reason="stop")  # cut by the stop switch
                self._count_tokens(out)
                self._last = out
                self._text.append(out.text)
                state.metrics.observe_token(flight.model, previous, out)
                if out.token_ids:
                    previous = out.time
                if out.finished:
                    state.metrics.observe_finished(flight.model, out)
                    self._ended = True
                    self._energy = self._take_energy()
                    outcome = "stopped" if flight.stopped_by is not None else None
                    written = self._finish(out, outcome)
                    await to_thread.run_sync(
                        functools.partial(_settle_after, written, energy=self._energy),
                        state.db,
                        self.admitted.ticket,
                        out.prompt_tokens,
                        out.completion_tokens,
                    )
                yield out
        except Exception:
            self._failed = True  # failsafe.RequestGuard answers it; request.end says "error"
            raise
        finally:
            self.end()

    def end(self) -> None:
        """Let go of the request if it has not ended: the client left (idempotent)."""
        self.stream.close()
        if self._ended:
            return
        self._ended = True
        # Settle in the background with what was generated so far.
        used = self._last.completion_tokens if self._last is not None else 0
        ticket, prompt_tokens = self.admitted.ticket, self.stream.prompt_tokens
        self._energy = self._take_energy()
        outcome = "error" if self._failed else "client_disconnected"
        written = self._finish(self._last, outcome, (prompt_tokens, used))
        settle = functools.partial(_settle_after, written, energy=self._energy)
        work = to_thread.run_sync(settle, self.state.db, ticket, prompt_tokens, used)
        self.state.background.add(work)

    def _finish(
        self,
        out: GenerationOutput | None,
        outcome: str | None,
        settled: tuple[int, int] | None = None,
    ) -> concurrent.futures.Future[int]:
        """The request's end in the log (its write returned), its review, its log line.
        `settled`: the tokens its usage counts when no output came (see records.request_end)."""
        request_id = self.stream.request_id
        self.state.oversight.untrack(request_id)
        text = "".join(self._text)
        keep, energy = self.admitted.keep, self._energy
        written = audit_end(self.state, request_id, out, text, keep, outcome, energy, settled)
        self.held = review_queue.after(self.state, self.admitted, out, text, outcome)
        tokens = (out.prompt_tokens, out.completion_tokens) if out is not None else settled
        tokens = tokens or (0, 0)
        # One searchable line a request: ids, names and counts, never content or the user.
        log.info(
            "request %s ended (%s): tenant %s, model %s, %d prompt + %d completion tokens",
            request_id,
            outcome or (out.finish_reason if out is not None else None),
            self.admitted.principal.tenant,
            self.admitted.info.id,
            *tokens,
        )
        trace, replica = self.admitted.trace, self.stream.replica
        if replica is not None:  # a failover may have moved it since admission
            trace.span.set_attribute("sovllm.replica", replica.name)
        trace.end(out, outcome or "completed", written)
        return written

    def _count_tokens(self, out: GenerationOutput) -> None:
        """Tell the energy meter the tokens this output brought: the prompt's computed part
        with the first, then each generated token (replicas whose steps it cannot see)."""
        before = self._last.completion_tokens if self._last is not None else 0
        n = out.completion_tokens - before
        if self._last is None:
            n += max(0, out.prompt_tokens - out.cached_tokens)
        self.state.energy.tokens(self.stream.request_id, n)

    def _take_energy(self) -> Energy | None:
        tenant, model = self.admitted.principal.tenant, self.admitted.info.id
        return self.state.energy.finish(self.stream.request_id, tenant, model)


def _settle_after(
    written: concurrent.futures.Future[int],
    db: Database,
    ticket: quotas.Ticket,
    prompt_tokens: int,
    completion_tokens: int,
    energy: Energy | None = None,
) -> None:
    """Settle once the request's end entry is durable (in a worker thread).

    In this order a crash between the two leaves the request's in-flight row, and the next
    gateway to start settles it from the end entry (governance/instances.py): usage always
    matches the log. Settled first, a crash before the end's commit would leave usage that no
    entry accounts for. Settled even if the entry failed: the reservation must not stay."""
    try:
        written.result(timeout=_END_WAIT_S)
    except Exception:
        log.exception("request %s: its end entry failed; settling anyway", ticket.request_id)
    quotas.settle(db, ticket, prompt_tokens, completion_tokens, energy=energy)


_END_WAIT_S = 60.0


def audit_end(
    state: AppState,
    request_id: str,
    out: GenerationOutput | None,
    text: str,
    keep: Keep,
    outcome: str | None = None,
    energy: Energy | None = None,
    settled: tuple[int, int] | None = None,
) -> concurrent.futures.Future[int]:
    """The request's `request.end` entry, and its answer kept under the tenant's policy.

    Returns the entry's write (its span in the trace ends when it is durable)."""
    if outcome is None:
        outcome = "error" if out is not None and out.error else "completed"
    digest = keyed_hash(state.audit, "response", text.encode())
    fields = records.request_end(out, outcome, digest, keep.policy, energy, settled)
    written = state.audit.append(records.END, fields, request_id)
    if keep.policy != "none":
        state.background.add(to_thread.run_sync(store, state, request_id, keep, "response", text))
    return written
