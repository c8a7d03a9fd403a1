"""Where an answer meets its tenant's review policy, as its request ends (run.py): held until a
reviewer approves it, or drawn for review after delivery (governance/review.py)."""

from __future__ import annotations

import asyncio

from anyio import to_thread

from sovllm.engines.base import GenerationOutput
from sovllm.gateway.admit import Admitted
from sovllm.gateway.state import AppState
from sovllm.governance import review
from sovllm.governance.audit import operations, records


def after(
    state: AppState,
    admitted: Admitted,
    out: GenerationOutput | None,
    text: str,
    outcome: str | None,
) -> asyncio.Task[None] | None:
    """Under `hold`: the task sealing and queueing the answer, which the route awaits before it
    answers "pending" (the answer itself never goes out). Under `sample`: the answer, if drawn,
    is queued in the background. None when nothing is held (an answer that failed or whose
    client left has nothing to deliver)."""
    if out is None or out.error or outcome not in (None, "stopped"):
        return None
    a = admitted
    policy = review.parse_policy(a.principal.review_policy)
    if policy.mode == "none" or (policy.mode == "sample" and not policy.picks()):
        return None
    item = review.Queued(
        request_id=a.stream.request_id,
        tenant_id=a.principal.tenant_id,
        key_id=a.principal.key_id,
        mode=policy.mode,
        route=a.call.route,
        model=a.info.id,
        weights_sha256=a.info.sha256,
        created=a.created,
        finish_reason=out.finish_reason,
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        content_policy=a.keep.policy,
        subject=a.keep.subject,
    )
    held = text if policy.mode == "hold" else None

    async def work() -> None:
        await to_thread.run_sync(review.queue, state.db, state.vault, item, held)
        fields = operations.review_queued(a.principal, policy.mode, str(policy), a.keep.policy)
        entry = state.audit.append(records.REVIEW_QUEUED, fields, item.request_id)
        await asyncio.wrap_future(entry)

    if policy.mode == "sample":
        state.background.add(work())
        return None
    task = asyncio.get_running_loop().create_task(work())
    state.background.add(task)  # the shutdown waits for it even if the client has gone
    return task
