"""What an audit entry says about a request: the documented, versioned fields (schema v1).

Content is never stored here: prompts and answers appear only as keyed hashes (GDPR Art. 25,
data protection by default), the `user` field only as a pseudonym.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sovllm.engines.base import GenerationOutput, ModelInfo, SamplingParams
from sovllm.governance.identity import Principal
from sovllm.observability.energy.meter import Energy

if TYPE_CHECKING:  # the stop switch builds its entries here: no import cycle
    from sovllm.governance.audit.report import Report
    from sovllm.governance.oversight import Stop


BEGIN = "request.begin"
END = "request.end"
REJECTED = "request.rejected"
CONTENT_NOT_KEPT = "request.content_not_kept"


@dataclass(frozen=True)
class Begin:
    """What `request.begin` says of an admitted request (docs/audit.md has the schema)."""

    principal: Principal
    route: str
    model: ModelInfo
    sampling: SamplingParams
    prompt_tokens: int
    reserved_tokens: int
    prompt_hash: str
    user_pseudonym: str | None
    pii_found: dict[str, int] | str
    """Personal-data findings per kind in the prompt as sent, or why detection failed."""
    content_policy: str = "none"
    masked: bool = False
    """The findings were masked before the prompt reached the model."""


def request_begin(b: Begin) -> dict[str, Any]:
    params = asdict(b.sampling)
    params["stop_count"] = len(params.pop("stop"))  # stop strings can carry content
    params["logit_bias_count"] = len(params.pop("logit_bias"))
    model = b.model
    return {
        "principal": {**b.principal.actor(), "user": b.user_pseudonym},
        "route": b.route,
        "model": {
            "id": model.id,
            "weights_sha256": model.sha256,
            "engine_config_sha256": model.engine_config_sha256,
            # A derived file's hash says nothing about where it came from: this does.
            **(
                {"derived_from_sha256": model.derived_from_sha256}
                if model.derived_from_sha256
                else {}
            ),
        },
        "sampling": params,
        "tokens": {"prompt": b.prompt_tokens, "reserved": b.reserved_tokens},
        "policy": {"quota": "admitted", "pii": b.pii_found, "masked_before_model": b.masked},
        "content": {"policy": b.content_policy, "prompt_hmac": b.prompt_hash},
    }


def request_rejected(
    principal: Principal, route: str, policy: dict[str, Any], reserved_tokens: int | None = None
) -> dict[str, Any]:
    """A request refused after authentication (a quota, the personal-data rule): who, where and
    which rule; no content."""
    fields: dict[str, Any] = {"principal": principal.actor(), "route": route, "policy": policy}
    if reserved_tokens is not None:
        fields["tokens"] = {"reserved": reserved_tokens}
    return fields


def request_end(
    out: GenerationOutput | None,
    outcome: str,
    response_hash: str | None,
    content_policy: str = "none",
    energy: Energy | None = None,
    settled: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """`settled`: the (prompt, completion) tokens settled for a request that ended before any
    output (a client gone first): its usage counts its prompt, and so must its end."""
    fields: dict[str, Any] = {"outcome": outcome}
    if energy is not None:  # joules to the µJ, CO2e to the ng; co2e_g null without a grid
        co2e = round(energy.co2e_g, 9) if energy.co2e_g is not None else None
        fields["energy"] = {
            "joules": round(energy.joules, 6),
            "source": energy.source,
            "co2e_g": co2e,
        }
    if out is not None:
        fields["tokens"] = {"prompt": out.prompt_tokens, "completion": out.completion_tokens}
        fields["finish_reason"] = out.finish_reason
        if out.error:
            fields["error"] = out.error
        t = out.timings
        if t is not None:
            fields["timings"] = {
                "queue_s": _span(t.arrival, t.scheduled),
                "ttft_s": _span(t.arrival, t.first_token),
                "total_s": _span(t.arrival, t.finished),
            }
    elif settled is not None:
        fields["tokens"] = {"prompt": settled[0], "completion": settled[1]}
    fields["content"] = {"policy": content_policy, "response_hmac": response_hash}
    return fields


def content_not_kept(part: str, policy: str, reason: str, detail: str) -> dict[str, Any]:
    """A part (`prompt` or `response`) the tenant's policy would keep and the service could not:
    `reason` is `masking_failed` or `master_key`; `detail` names the failure, never the text."""
    return {"part": part, "policy": policy, "reason": reason, "detail": detail}


def _span(start: float, end: float | None) -> float | None:
    return round(end - start, 6) if end is not None else None


# -- who did what: the entries that name an actor (docs/audit.md, "Entry schema") -------------
#
# `actor` is a principal's `actor()` (tenant, key id, role) through the API, `cli_actor()` (user
# and host) from the command line, or `{"job": "retention"}`.

Actor = Mapping[str, object]
Write = Callable[[str, dict[str, Any]], None]
"""Writes one audit entry (its kind and body), durable when it returns: the API's log or the
command line's (cli/common.py `audit_writer`)."""

ADMIN = "admin"
READ = "access.read"
DENIED = "access.denied"
STOP = "oversight.stop"
RESUME = "oversight.resume"
VERIFY = "audit.verify"
ERASE = "privacy.erase"
PURGE = "privacy.purge"
ERROR = "request.error"
MASTER_ROTATED = "privacy.master_key_rotated"
REVIEW_QUEUED = "review.queued"
REVIEW_DECIDED = "review.decided"
REVIEW_DELIVERED = "review.delivered"
BACKUP = "store.backup"
RESTORE = "store.restore"
INCIDENT_OPEN = "incident.open"
INCIDENT_LINK = "incident.link"
INCIDENT_STATUS = "incident.status"
CLOCK = "clock.sync"
MODEL_APPROVE = "model.approve"
MODEL_REVOKE = "model.revoke"
MODEL_REFUSE = "model.refuse"
MODEL_WARN = "model.warn"
MODEL_EVAL = "model.eval"
COMPLIANCE_REPORT = "compliance.report"
"""The model allow-list's and evaluation's entries; their bodies are built in
governance/provenance/entries.py (this file stays one screen per concern)."""


def admin(actor: Actor, action: str, target: Mapping[str, object]) -> dict[str, Any]:
    """A tenant or key change (`action`: tenant.create|update|delete, key.create|update|revoke);
    `target` names it: names, ids, limits, never a key itself (only its id and prefix)."""
    return {"actor": dict(actor), "action": action, "target": dict(target)}


def access_read(
    actor: Actor, resource: str, query: Mapping[str, object], count: int
) -> dict[str, Any]:
    """A read of personal or security data; `query` holds only parameters that are not
    personal (the unset ones are left out)."""
    given = {k: v for k, v in query.items() if v is not None}
    return {"actor": dict(actor), "resource": resource, "query": given, "count": count}


def access_denied(
    minute: str,
    source: str,
    key_prefix: str,
    status: int,
    count: int,
    reasons: Mapping[str, int],
    paths: Sequence[str],
) -> dict[str, Any]:
    """One minute's refusals from one source with one presented key prefix and status."""
    return {
        "minute": minute,
        "source": source,
        "key_prefix": key_prefix,
        "status": status,
        "count": count,
        "reasons": dict(reasons),
        "paths": list(paths),
    }


def oversight_stop(stop: Stop) -> dict[str, Any]:
    """A stop as recorded, before it takes effect (and as the API shows it)."""
    return {
        "scope": stop.scope,
        "target": stop.target or None,
        "mode": stop.mode,
        "reason": stop.reason,
        "actor": stop.actor,
        "created_at": dt.datetime.fromtimestamp(stop.created_at, dt.UTC).isoformat(),
    }


def oversight_resume(actor: Actor, scope: str, target: str) -> dict[str, Any]:
    return {"scope": scope, "target": target or None, "actor": dict(actor)}


def audit_verify(actor: Actor, report: Report) -> dict[str, Any]:
    """A verification run through the API and its result (at most 20 problems)."""
    result = {
        "ok": report.ok,
        "size": report.size,
        "checkpoints": report.checkpoints,
        "first_bad_entry": report.first_bad,
        "first_bad_checkpoint": report.first_bad_checkpoint,
        "pruned": report.pruned,
        "problems": report.problems[:20],
        "summary": report.summary(),
    }
    return {"actor": dict(actor), "result": result}


def privacy_erase(
    actor: Actor, subject: str, content_records: int, old_key_bytes: str
) -> dict[str, Any]:
    """A subject's content keys destroyed; `subject` is its id in the vault, never the name;
    `old_key_bytes`: where the destroyed key's bytes may still be found, if anywhere."""
    return {
        "actor": dict(actor),
        "subject": subject,
        "content_records": content_records,
        "old_key_bytes": old_key_bytes,
    }


def privacy_purge(actor: Actor, content_records: int, older_than_days: int) -> dict[str, Any]:
    return {
        "actor": dict(actor),
        "content_records": content_records,
        "older_than_days": older_than_days,
    }


def retention_prune(
    actor: Actor,
    days: int,
    cutoff: str,
    first: int,
    last: int,
    entries: int,
    columns_sha256: str,
) -> dict[str, Any]:
    """Bodies of entries `first`..`last` removed; the digest vouches for the columns they keep."""
    return {
        "actor": dict(actor),
        "setting": "retention.audit_days",
        "days": days,
        "cutoff": cutoff,
        "from_seq": first,
        "to_seq": last,
        "entries": entries,
        "columns_sha256": columns_sha256,
    }


def retention_usage(
    actor: Actor, days: int, before_day: str, day_rows: int, months: Sequence[str]
) -> dict[str, Any]:
    """Usage days before `before_day` folded into their tenant's months."""
    return {
        "actor": dict(actor),
        "setting": "retention.usage_days",
        "days": days,
        "before_day": before_day,
        "day_rows": day_rows,
        "months": list(months),
    }


def signing_key_rotated(fields: Mapping[str, Any], old_key: str, new_key: str) -> dict[str, Any]:
    """The audit signing key's transition: both verifier keys, with `fields` (the actor)."""
    return {**fields, "old_key": old_key, "new_key": new_key}


def pseudonym_key(key_id: str) -> dict[str, Any]:
    """The first pseudonym key's id, recorded when it is first used."""
    return {"key_id": key_id}


def pseudonyms_rotated(fields: Mapping[str, Any], epoch: int, key_id: str) -> dict[str, Any]:
    """A new pseudonym epoch and its key's id, with `fields` (the actor)."""
    return {**fields, "epoch": epoch, "key_id": key_id}


def master_key_rotated(
    actor: Actor, old_key: str, new_key: str, rewrapped: int, resumed: bool
) -> dict[str, Any]:
    return {
        "actor": dict(actor),
        "old_key": old_key,
        "new_key": new_key,
        "rewrapped": rewrapped,
        "resumed": resumed,
    }


def request_error(route: str | None, method: object, error: str, answered: str) -> dict[str, Any]:
    """An unexpected exception that reached the client's answer: its class, never its message."""
    return {"route": route, "method": method, "error": error, "answered": answered}
