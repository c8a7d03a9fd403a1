"""GET /admin/v1/models: the model allow-list, each row verified against its signature and the
audit log, with the latest evaluation of each weights hash per suite (the console's Models
panel; docs/oversight.md, "Models")."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel

from sovllm.api.admin_common import PREFIX, Auditor, ListOf
from sovllm.api.state import app_state
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.provenance import allowlist
from sovllm.governance.provenance.evals import latest_per_model

router = APIRouter(prefix=PREFIX, tags=["admin"])


class EvalOut(BaseModel):
    suite: str
    suite_version: str
    time: str
    scores: dict[str, float]
    thresholds: dict[str, float]
    passed: bool
    entry: int
    """The `model.eval` audit entry."""


class ModelOut(BaseModel):
    sha256: str
    name: str
    status: str
    """approved, revoked, tampered (the row fails verification), deleted (the log approves it,
    its row is gone) or not approved (only evaluated)."""
    problem: str | None = None
    kind: str | None = None
    source: str | None = None
    licence: str | None = None
    approved_by: dict[str, Any] | None = None
    approved_at: float | None = None
    evals: list[EvalOut] = []


def _models(log: AuditLog) -> list[ModelOut]:
    found = allowlist.listing(log)
    out: dict[str, ModelOut] = {}
    for v in found.rows:
        a = v.approval
        status = "tampered" if v.problem else "approved" if a.active else "revoked"
        out[a.sha256] = ModelOut(
            sha256=a.sha256,
            name=a.name,
            status=status,
            problem=v.problem,
            kind=a.kind,
            source=a.source,
            licence=a.licence,
            approved_by=a.approved_by,
            approved_at=a.approved_at,
        )
    for sha in found.missing:
        out[sha] = ModelOut(sha256=sha, name="", status="deleted", problem="its row was deleted")
    for e in latest_per_model(log.db):
        sha = str(e.get("sha256") or "")
        model = out.setdefault(
            sha, ModelOut(sha256=sha, name=str(e.get("model")), status="not approved")
        )
        model.evals.append(
            EvalOut(
                suite=str(e.get("suite")),
                suite_version=str(e.get("suite_version")),
                time=str(e.get("time")),
                scores=e.get("scores") or {},
                thresholds=e.get("thresholds") or {},
                passed=bool(e.get("passed")),
                entry=int(e["seq"]),
            )
        )
    return list(out.values())


@router.get("/models", dependencies=[Auditor])
async def get_models(request: Request) -> ListOf[ModelOut]:
    models = await to_thread.run_sync(_models, app_state(request).audit)
    return ListOf[ModelOut](data=models)
