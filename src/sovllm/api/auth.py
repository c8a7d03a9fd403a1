"""Identity and admission for the routes: who calls, may they, and is there quota left.

Database work runs in worker threads so the event loop keeps streaming tokens meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from anyio import to_thread
from fastapi import Request

from sovllm.api.errors import APIError
from sovllm.api.state import app_state
from sovllm.governance import quotas
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


async def identify(request: Request) -> Principal:
    db = app_state(request).db
    try:
        return await to_thread.run_sync(authenticate, db, bearer(request))
    except AuthError as exc:
        raise APIError(401, str(exc), code="invalid_api_key") from None


def require(roles: frozenset[Role]) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, if their role is one of `roles`."""

    async def dependency(request: Request) -> Principal:
        principal = await identify(request)
        if principal.role not in roles:
            raise _forbidden(principal.role, request.url.path, roles)
        request.state.principal = principal
        return principal

    return dependency


def _forbidden(role: Role, path: str, roles: frozenset[Role]) -> APIError:
    allowed = ", ".join(sorted(r.value for r in roles))
    return APIError(
        403,
        f"The role '{role.value}' may not use {path} (allowed: {allowed}).",
        "permission_error",
        code="forbidden",
    )


def _quota_error(exc: quotas.QuotaExceeded) -> APIError:
    headers = {"Retry-After": str(exc.retry_after_s), **exc.headers.as_dict()}
    return APIError(429, str(exc), "rate_limit_error", code=exc.code, headers=headers)


def check_key_present(request: Request) -> None:
    """Refuse a request with no usable key before any other work is done for it."""
    try:
        principal_shape(bearer(request))
    except AuthError as exc:
        raise APIError(401, str(exc), code="invalid_api_key") from None


async def authorize_and_admit(
    request: Request, roles: frozenset[Role], request_id: str, tokens: int
) -> tuple[Principal, quotas.Ticket]:
    """Key, role and quotas in one database transaction, in a worker thread."""
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
        raise APIError(401, str(exc), code="invalid_api_key") from None
    except quotas.Forbidden as exc:
        raise _forbidden(exc.role, request.url.path, roles) from None
    except quotas.QuotaExceeded as exc:
        if exc.principal is not None:
            # Durable before the refusal goes out, like every decision the log records.
            p = exc.principal
            written = app_state(request).audit.append(
                "request.rejected",
                {
                    "principal": {"tenant": p.tenant, "key_id": p.key_id, "role": p.role.value},
                    "route": request.url.path,
                    "policy": {"quota": exc.code},
                    "tokens": {"reserved": tokens},
                },
                request_id,
            )
            await asyncio.wrap_future(written)
        raise _quota_error(exc) from None
