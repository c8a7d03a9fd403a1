"""Who may reach /admin at all, decided before anything else is done with the request.

FastAPI reads and parses a route's JSON body before it runs the route's dependencies, so a
`user` key (or none) sending a malformed body to an admin route learnt that its body was
malformed (400) before it was told it may not be there. This gate authenticates every
/admin/v1 request first: no key or a bad one is 401, a `user` key 403 (both counted for the
access log, as the routes' own refusals are), and the body is never read. The principal is
left on the request's state, where the route's own role check (api/auth.require) takes it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sovllm.api.admin_common import PREFIX
from sovllm.api.auth import STAFF_ROLES, identify
from sovllm.api.errors import APIError, counted, from_domain
from sovllm.governance.identity import AuthError
from sovllm.governance.quotas import Forbidden


class AdminGate:
    """ASGI middleware: refuse /admin/v1 requests from a key that is no staff's (see above)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            principal = await identify(request)
            if principal.role not in STAFF_ROLES:
                raise Forbidden(principal.role, STAFF_ROLES, area="the administration API")
        except (AuthError, Forbidden) as exc:
            await counted(request, from_domain(request, exc))(scope, receive, send)
            return
        except APIError as exc:  # a source throttled for its failed sign-ins: 429
            await counted(request, exc)(scope, receive, send)
            return
        request.state.principal = principal
        await self.app(scope, receive, send)
