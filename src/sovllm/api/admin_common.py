"""What the admin routers share (admin_routes, audit_routes, oversight_routes): the role checks,
the list shape, the actor, the audit writer and the audited read."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Generic, Literal, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, model_validator

from sovllm.api.auth import ADMIN_ROLES, AUDIT_ROLES, require
from sovllm.api.schemas import no_lone_surrogates
from sovllm.api.state import AppState, app_state
from sovllm.governance.audit import records
from sovllm.governance.identity import Principal

T = TypeVar("T")

PREFIX = "/admin/v1"
Admin = Depends(require(ADMIN_ROLES))
Auditor = Depends(require(AUDIT_ROLES))


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        no_lone_surrogates(data)  # a name or reason that could not be stored: 400, not 500
        return data


class ListOf(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]


def actor(request: Request) -> dict[str, str]:
    """The caller, as the audit log names it."""
    principal: Principal = request.state.principal
    return principal.actor()


def writer(state: AppState) -> records.Write:
    """Audit entries from a worker thread (the governance functions run in one), each durable
    before the call returns."""

    def write(kind: str, fields: dict[str, Any]) -> None:
        state.audit.append(kind, fields).result()

    return write


async def audited_read(
    request: Request, resource: str, query: Mapping[str, object], count: int
) -> None:
    """An audited read (`access.read`), durable before the data goes out: if the log cannot
    record who read it, nobody reads it."""
    fields = records.access_read(actor(request), resource, query, count)
    await asyncio.wrap_future(app_state(request).audit.append(records.READ, fields))
