"""What the service keeps of a request's prompt and answer, under its tenant's policy."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from sovllm.engines.base import GenerationRequest
from sovllm.gateway.state import AppState
from sovllm.governance.audit import records
from sovllm.governance.privacy.content import NotKept
from sovllm.governance.privacy.masterkey import MasterKeyError

log = logging.getLogger("sovllm.gateway")


@dataclass(frozen=True)
class Keep:
    """Whose content this is, and what the tenant's policy lets the service keep of it."""

    subject: str
    policy: str


def prompt_text(gen: GenerationRequest) -> str:
    """The prompt as one text: what is hashed, checked for personal data and kept."""
    if gen.messages is not None:
        return "\n".join(f"{m.role}: {m.content}" for m in gen.messages)
    return gen.prompt if isinstance(gen.prompt, str) else json.dumps(list(gen.prompt or []))


def store(state: AppState, request_id: str, keep: Keep, part: str, text: str) -> None:
    """Keep one part under the tenant's policy (in a worker thread).

    Fails closed: a part that cannot be masked under `redacted` is not kept, and the request's
    audit trail says so (`request.content_not_kept`).
    """
    try:
        state.vault.store(request_id, keep.subject, keep.policy, part, text)
    except (NotKept, MasterKeyError) as exc:  # MasterKeyError: e.g. a master rotated meanwhile
        reason = "masking_failed" if isinstance(exc, NotKept) else "master_key"
        log.error("request %s: content not kept: %s", request_id, exc)
        fields = records.content_not_kept(part, keep.policy, reason, str(exc))
        state.audit.append(records.CONTENT_NOT_KEPT, fields, request_id).result(timeout=30)
