"""Identity and admission for the routes: who calls, may they, and is there quota left.

Database work runs in worker threads so the event loop keeps streaming tokens meanwhile. Every
401 and 403 is counted for the access log (governance/access.py), and a source address with
too many of them is refused with 429 before its key is looked at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from anyio import to_thread
from fastapi import Request

from sovllm.api.errors import APIError
from sovllm.api.state import app_state
from sovllm.governance import quotas
from sovllm.governance.access import presented_prefix
from sovllm.governance.audit import records
from sovllm.governance.identity import AuthError, Principal, Role, authenticate, principal_shape

INFERENCE_ROLES = frozenset({Role.USER, Role.ADMIN})
AUDIT_ROLES = frozenset({Role.AUDITOR, Role.ADMIN})
ADMIN_ROLES = frozenset({Role.ADMIN})
ANY_ROLE = frozenset(Role)


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


def source_of(request: Request) -> str:
    """The client's address: the connection's peer, or what a trusted proxy says it is
    (`security.trusted_proxies`; uvicorn rewrites the peer only for those)."""
    return request.client.host if request.client is not None else "unknown"


def _count(request: Request, status: int, reason: str) -> None:
    guard = app_state(request).access
    guard.denied(source_of(request), presented_prefix(bearer(request)), status, reason,
                 request.url.path)  # fmt: skip


def _throttle(request: Request) -> None:
    """429 for a source past `security.auth_failures_per_minute`, whatever key it sends."""
    source = source_of(request)
    wait = app_state(request).access.retry_after(source)
    if wait is None:
        return
    _count(request, 429, "throttled")
    raise APIError(
        429,
        f"Too many failed authentications from {source} in the last minute; try again in {wait} s.",
        "rate_limit_error",
        code="too_many_authentication_failures",
        headers={"Retry-After": str(wait)},
    )


def _unauthorized(request: Request, exc: AuthError) -> APIError:
    _count(request, 401, exc.reason)
    return APIError(401, str(exc), code="invalid_api_key")


async def identify(request: Request) -> Principal:
    _throttle(request)
    db = app_state(request).db
    try:
        return await to_thread.run_sync(authenticate, db, bearer(request))
    except AuthError as exc:
        raise _unauthorized(request, exc) from None


def require(roles: frozenset[Role]) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, if their role is one of `roles`."""

    async def dependency(request: Request) -> Principal:
        principal = await identify(request)
        if principal.role not in roles:
            raise _forbidden(request, principal.role, roles)
        request.state.principal = principal
        return principal

    return dependency


def _forbidden(request: Request, role: Role, roles: frozenset[Role]) -> APIError:
    _count(request, 403, "role")
    allowed = ", ".join(sorted(r.value for r in roles))
    return APIError(
        403,
        f"The role '{role.value}' may not use {request.url.path} (allowed: {allowed}).",
        "permission_error",
        code="forbidden",
    )


def _quota_error(exc: quotas.QuotaExceeded) -> APIError:
    headers = {"Retry-After": str(exc.retry_after_s), **exc.headers.as_dict()}
    return APIError(429, str(exc), "rate_limit_error", code=exc.code, headers=headers)


def check_key_present(request: Request) -> None:
    """Refuse a request with no usable key before any other work is done for it."""
    _throttle(request)
    try:
        principal_shape(bearer(request))
    except AuthError as exc:
        raise _unauthorized(request, exc) from None


async def authorize_and_admit(
    request: Request, roles: frozenset[Role], request_id: str, tokens: int
) -> tuple[Principal, quotas.Ticket]:
    """Key, role and quotas in one database transaction, in a worker thread."""
    _throttle(request)
    try:
        return await to_thread.run_sync(
            quotas.authorize_and_admit,
            app_state(request).db,
            bearer(request),
            roles,
            request_id,
            tokens,
        )
    except AuthError as exc:
        raise _unauthorized(request, exc) from None
    except quotas.Forbidden as exc:
        raise _forbidden(request, exc.role, roles) from None
    except quotas.QuotaExceeded as exc:
        if exc.principal is not None:
            # Durable before the refusal goes out, like every decision the log records.
            p = exc.principal
            fields = records.request_rejected(p, request.url.path, {"quota": exc.code}, tokens)
            written = app_state(request).audit.append("request.rejected", fields, request_id)
            await asyncio.wrap_future(written)
        raise _quota_error(exc) from None
