"""Identity for the routes: who calls, and may they.

Database work runs in worker threads so the event loop keeps streaming tokens meanwhile. Every
401 and 403 is counted for the access log (governance/access.py, through api/errors.py), and a
source address with too many of them is refused with 429 before its key is looked at.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from anyio import to_thread
from fastapi import Request

from sovllm.api.credentials import bearer, source_of
from sovllm.api.errors import APIError, count_refusal
from sovllm.api.state import app_state
from sovllm.gateway.admit import INFERENCE_ROLES
from sovllm.governance.identity import Principal, Role, authenticate, principal_shape
from sovllm.governance.quotas import Forbidden

__all__ = ["ADMIN_ROLES", "ANY_ROLE", "AUDIT_ROLES", "INFERENCE_ROLES", "bearer", "require"]

AUDIT_ROLES = frozenset({Role.AUDITOR, Role.ADMIN})
ADMIN_ROLES = frozenset({Role.ADMIN})
ANY_ROLE = frozenset(Role)
STAFF_ROLES = ANY_ROLE - {Role.USER}
"""The roles that may reach an /admin route at all (each route then checks its own)."""


def _throttle(request: Request) -> None:
    """429 for a source past `security.auth_failures_per_minute`, whatever key it sends."""
    source = source_of(request)
    wait = app_state(request).access.retry_after(source)
    if wait is None:
        return
    count_refusal(request, 429, "throttled")
    raise APIError(
        429,
        f"Too many failed authentications from {source} in the last minute; try again in {wait} s.",
        "rate_limit_error",
        code="too_many_authentication_failures",
        headers={"Retry-After": str(wait)},
    )


async def identify(request: Request) -> Principal:
    """The caller's principal; AuthError (mapped to 401 and counted) if the key is no good."""
    _throttle(request)
    return await to_thread.run_sync(authenticate, app_state(request).db, bearer(request))


def require(roles: frozenset[Role]) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, if their role is one of `roles`."""

    async def dependency(request: Request) -> Principal:
        # api/admin_gate.py has identified an /admin caller already: one database trip.
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:
            principal = await identify(request)
        if principal.role not in roles:
            raise Forbidden(principal.role, roles)
        request.state.principal = principal
        return principal

    return dependency


def check_key_present(request: Request) -> None:
    """Refuse a request with no usable key before any other work is done for it."""
    _throttle(request)
    principal_shape(bearer(request))
