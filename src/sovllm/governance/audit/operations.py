"""The bodies of the operations entries: incidents, the clock, backups and reviews (their kinds
are in records.py, with every other kind; docs/audit.md, "Entry schema")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sovllm.governance.audit.records import Actor
from sovllm.governance.identity import Principal


def incident_open(
    actor: Actor,
    incident: str,
    severity: str,
    summary: str,
    aware_at: str,
    deadline: str | None,
    basis: str,
) -> dict[str, Any]:
    """An incident opened: its class, when the deployer became aware and the report's deadline
    (None: no report due to an authority); `basis` names the rule that sets it."""
    return {
        "actor": dict(actor),
        "incident": incident,
        "severity": severity,
        "summary": summary,
        "aware_at": aware_at,
        "report_deadline": deadline,
        "basis": basis,
    }


def incident_link(
    actor: Actor, incident: str, request_id: str | None, audit_range: tuple[int, int] | None
) -> dict[str, Any]:
    """A request, or a range of audit entries (both ends included), tied to an incident."""
    return {
        "actor": dict(actor),
        "incident": incident,
        "linked_request_id": request_id,
        "audit_range": list(audit_range) if audit_range is not None else None,
    }


def incident_status(actor: Actor, incident: str, old: str, new: str, note: str) -> dict[str, Any]:
    return {"actor": dict(actor), "incident": incident, "from": old, "to": new, "note": note}


def clock_sync(
    trigger: str,
    source: str,
    synchronized: bool | None,
    offset_s: float | None,
    max_error_s: float | None,
    detail: str,
) -> dict[str, Any]:
    """The clock's state (ISO/IEC 27001 A.8.17) at start-up or an hourly check: whether the
    kernel says it is synchronised (None: it could not be read) and its estimated offset."""
    return {
        "actor": {"job": "clock"},
        "trigger": trigger,
        "source": source,
        "synchronized": synchronized,
        "offset_s": offset_s,
        "max_error_s": max_error_s,
        "detail": detail,
    }


def store_backup(
    actor: Actor, file: str, sha256: str, size: int, backend: str, keys: Sequence[str]
) -> dict[str, Any]:
    """A backup written (`sovllm backup`): where, its digest, and what it holds (key files by
    name only)."""
    return {
        "actor": dict(actor),
        "file": file,
        "sha256": sha256,
        "bytes": size,
        "database": backend,
        "keys": list(keys),
    }


def store_restore(
    actor: Actor, file: str, sha256: str, created_at: str, backend: str, keys: Sequence[str]
) -> dict[str, Any]:
    """A backup restored (`sovllm restore`), recorded in the restored log: the file, its digest
    and when it was taken."""
    return {
        "actor": dict(actor),
        "file": file,
        "sha256": sha256,
        "backup_created_at": created_at,
        "database": backend,
        "keys": list(keys),
    }


def review_queued(principal: Principal, mode: str, policy: str, content: str) -> dict[str, Any]:
    """An answer queued for human review (`mode` hold: held until approved; sample: delivered,
    then drawn), under the tenant's review and content policies then."""
    policies = {"review_policy": policy, "content_policy": content}
    return {"principal": principal.actor(), "mode": mode, **policies}


def review_decided(
    actor: Actor, decision: str, before: str, mode: str, tenant: str, note: str | None
) -> dict[str, Any]:
    """A reviewer's `approve` or `override` (the answer is disregarded), from status `before`;
    the note is recorded like a stop's reason (it should carry no personal data)."""
    done = {"decision": decision, "from": before, "mode": mode, "tenant": tenant, "note": note}
    return {"actor": dict(actor), **done}


def review_delivered(actor: Actor, sealed_copy: str) -> dict[str, Any]:
    """An approved held answer handed to its client; `sealed_copy`: what became of it."""
    return {"actor": dict(actor), "sealed_copy": sealed_copy}
