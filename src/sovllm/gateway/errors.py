"""Why the gateway refused a request, as domain errors; `api/errors.py` maps them to HTTP.

The other refusals on the path are raised where they are decided and keep their homes:
`identity.AuthError` (no such key), `quotas.Forbidden` (role), `quotas.QuotaExceeded`,
`pool.router.ModelNotServedError` and the engines' `EngineError`s.
"""

from __future__ import annotations

from sovllm.governance.identity import Principal
from sovllm.governance.oversight import Stop


class Stopped(Exception):
    """The stop switch covers this request's model or tenant (AI Act Art. 14(4)(e))."""

    def __init__(self, stop: Stop) -> None:
        super().__init__(stop.message())
        self.stop = stop


class PromptNotCheckable(Exception):
    """The tenant's prompts must be masked, and this one cannot be checked (token ids): the
    client's to fix."""

    def __init__(self, principal: Principal) -> None:
        super().__init__(
            f"Tenant {principal.tenant} requires personal data to be masked before prompts "
            "reach the model, and this prompt could not be checked: send text, not token ids."
        )
        self.principal = principal


class MaskingFailed(Exception):
    """The tenant's prompts must be masked, and the personal-data check failed on the server:
    the prompt was not sent to the model."""

    def __init__(self, tenant: str, request_id: str) -> None:
        super().__init__(
            f"Tenant {tenant} requires personal data to be masked before prompts reach the "
            "model, and the personal-data check failed on the server, so the prompt was not "
            f"sent to the model. The administrator can find request {request_id} in the server "
            "log and the audit log."
        )
