"""Admin API: the replica pool and the stop switch (issue #6), under /admin/v1.

A stop or resume is `governance.oversight`'s, recorded in the audit log before it takes effect;
this gateway then applies it at once (the others within a fraction of a second). The polled
status routes (pool, stops) are not audited reads: they hold no personal data.
"""

from __future__ import annotations

from typing import Literal

from anyio import to_thread
from fastapi import APIRouter, Request
from pydantic import Field

from sovllm.api.admin_common import PREFIX, Admin, Auditor, Body, ListOf, actor, writer
from sovllm.api.errors import APIError
from sovllm.api.state import AppState, app_state
from sovllm.governance import oversight

router = APIRouter(prefix=PREFIX, tags=["admin"])


class StopIn(Body):
    scope: Literal["all", "model", "tenant"] = "all"
    target: str | None = Field(None, max_length=128, description="The model or tenant.")
    mode: Literal["drain", "cut"] | None = Field(
        None, description="drain: requests in flight finish; cut: they end within a second."
    )
    reason: str = Field("", max_length=500)


class ResumeIn(Body):
    scope: Literal["all", "model", "tenant"] = "all"
    target: str | None = Field(None, max_length=128)


def _target(scope: str, target: str | None) -> str:
    if scope == "all":
        if target:
            raise APIError(400, "a stop of scope 'all' takes no target", param="target")
        return ""
    if not target:
        raise APIError(400, f"a stop of scope '{scope}' needs the {scope}'s name", param="target")
    return target


async def _follow(state: AppState) -> None:
    """This gateway applies the change now, not at its next refresh."""
    state.oversight.apply(await to_thread.run_sync(state.oversight.refresh))


@router.get("/pool", dependencies=[Auditor])
async def pool_status(request: Request) -> dict[str, object]:
    """Each replica's health and load, and each model's queue depth."""
    pool = app_state(request).pool
    return {
        "policy": pool.settings.policy,
        "queue_depth": pool.stats().waiting,
        "models": {name: {"queue_depth": pool.stats(name).waiting} for name in pool.model_ids},
        "replicas": [r.describe() for r in pool.replicas],
    }


@router.get("/stops", dependencies=[Auditor])
async def get_stops(request: Request) -> ListOf[dict[str, object]]:
    stops = await to_thread.run_sync(oversight.list_stops, app_state(request).db)
    return ListOf[dict[str, object]](data=[s.as_dict() for s in stops])


@router.post("/stop", dependencies=[Admin])
async def stop(body: StopIn, request: Request) -> dict[str, object]:
    """Halt everything, a model or a tenant (AI Act Art. 14(4)(e)); recorded with its actor."""
    state = app_state(request)
    target = _target(body.scope, body.target)
    mode = body.mode or state.settings.stop_mode
    who: dict[str, object] = {**actor(request)}
    made = oversight.new_stop(body.scope, target, mode, body.reason, who)
    served = state.pool.model_ids
    await to_thread.run_sync(oversight.stop, state.db, writer(state), made, served)
    await _follow(state)
    return made.as_dict()


@router.post("/resume", dependencies=[Admin])
async def resume(body: ResumeIn, request: Request) -> dict[str, object]:
    state = app_state(request)
    target = _target(body.scope, body.target)
    await to_thread.run_sync(
        oversight.resume, state.db, writer(state), actor(request), body.scope, target
    )
    await _follow(state)
    return {"resumed": True, "scope": body.scope, "target": target or None}
