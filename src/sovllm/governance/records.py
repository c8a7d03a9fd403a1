"""The GDPR Art. 30 record of processing activities, from the live configuration and database.

Everything in it is read from what the service actually does: the settings, the tenants'
content policies in the database, the key files' paths. What is not configured is said to be
missing, loudly, never filled in with a plausible default.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from sovllm.config import AUDIT_MINIMUM_DAYS, Settings
from sovllm.governance.audit import key_path, pseudonym_key_path
from sovllm.governance.privacy.content import master_key_path
from sovllm.store.db import Database
from sovllm.store.schema import Tenant


def not_set(setting: str) -> str:
    return f"NOT SET: configure `{setting}` (GDPR Art. 30(1)(a) requires it)"


def record_of_processing(settings: Settings, db: Database) -> dict[str, Any]:
    r = settings.retention
    with db.read() as s:
        tenants = s.execute(
            select(Tenant.name, Tenant.content_policy, Tenant.mask_prompts).order_by(Tenant.name)
        ).all()
    keeping = [
        {"tenant": name, "policy": policy}
        for name, policy, _ in tenants
        if policy in ("redacted", "full")
    ]
    masking = [name for name, _, mask in tenants if mask]
    c = settings.compliance
    return {
        "controller": c.controller or not_set("compliance.controller"),
        "data_protection_officer": c.dpo_contact or not_set("compliance.dpo_contact"),
        "system": {
            "name": "sovllm",
            "model": settings.model,
            "bind": settings.host,
            "storage": db.backend,
            "data_dir": str(settings.data_dir),
        },
        "purposes": [
            "answering users' requests with a language model run on the organisation's "
            "own hardware",
            "security, accountability and traceability of the AI system (AI Act Art. 12, "
            "ISO/IEC 27001 A.8.15)",
            "enforcing usage quotas and accounting usage per department",
        ],
        "data_subjects": ["the organisation's users (staff)", "persons named in prompts"],
        "data_categories": [
            {
                "category": "audit metadata",
                "content": "tenant, key id, role, pseudonymised "
                "user id (HMAC), route, model and weights hash, sampling parameters, token "
                "counts, timings, outcome, personal-data findings per type (counts only); "
                "who read what (access.read: the reader's key id and tenant, or the command "
                "line's user and host); refused sign-ins (access.denied: source IP address and "
                "the first characters of the key presented, per minute)",
                "retention_days": r.audit_days,
                "retention": f"bodies pruned after {r.audit_days} days; each pruned entry "
                "keeps its sequence number, time, kind, request id and hash (the Merkle tree, "
                "its checkpoints and every proof still verify), and the retention.prune "
                "records that vouch for them (with who ran the job) are never pruned",
                "minimum_days": AUDIT_MINIMUM_DAYS,
                "legal_basis": "AI Act Art. 19(1), 26(6)",
            },
            {
                "category": "prompt and answer content",
                "content": _content(keeping),
                "tenants_keeping_content": keeping,
                "retention_days": r.content_days,
                "retention": f"deleted after {r.content_days} days (checked every "
                f"{r.purge_every_s:g} s by the server)"
                if keeping
                else "not stored",
            },
            {
                "category": "usage counters",
                "content": "requests and tokens per key, tenant and day",
                "retention_days": r.usage_days,
                "retention": f"rolled up per tenant and month after {r.usage_days} days, "
                "then deleted",
            },
            {
                "category": "API keys",
                "content": "SHA-256 of each key, a 4-character prefix, "
                "tenant, role, limits, expiry",
                "retention": "until deleted",
            },
        ],
        "keys": {
            "content_master_key": f"file {master_key_path(settings)} (AES-256, "
            "wraps each data subject's content key; whoever holds it and the database can "
            "read kept content)",
            "audit_signing_key": f"file {key_path(settings)} (Ed25519, signs checkpoints "
            "and erasure receipts; rotated with `sovllm audit rotate-signing-key`)",
            "pseudonym_key": f"file {pseudonym_key_path(settings)} (HMAC-SHA256 key of the "
            "pseudonyms of users, prompts and answers in the audit log and of data subjects' "
            "ids; random at first start (a data folder from before it had a file keeps the "
            "key its pseudonyms were made under), its id recorded in the audit log, a "
            "mismatching file refused at start; rotated with `sovllm privacy "
            "rotate-pseudonym-key`, which starts a new pseudonym epoch: from then on the same "
            "user has a different pseudonym, earlier entries keep theirs, and the retired key is "
            "kept in data_dir/audit/pseudonym.retired and in the database (wrapped under the "
            "master key, removed with the content past retention.content_days) only so that "
            "erasure finds the user's earlier content)",
            "rotation": "the master key with `sovllm privacy rotate-master-key` (every data "
            "subject's key re-wrapped); each rotation is an audit entry naming who ran it",
        },
        "recipients": _recipients(settings),
        "transfers_to_third_countries": "none: inference runs on the organisation's hardware "
        "and nothing leaves the machine"
        + (
            f"; upstreams allowed outside private networks: {', '.join(settings.egress_allow)}"
            if settings.egress_allow
            else ""
        ),
        "security_measures": [
            _open_routes(settings),
            "roles: user (inference, its tenant), reviewer (its tenant's held answers), "
            "auditor (usage, the audit log and kept content of every tenant, erasure), admin "
            "(everything, every tenant)",
            "binds to 127.0.0.1 unless configured otherwise",
            "tamper-evident audit log: RFC 6962 Merkle tree with Ed25519-signed checkpoints "
            "(C2SP), verifiable offline",
            _minimisation(keeping),
            "personal data masked before prompts reach the model for tenants: "
            + (", ".join(masking) if masking else "none"),
            "per-key and per-tenant quotas enforced in the database across gateways",
        ],
    }


def _open_routes(settings: Settings) -> str:
    """What answers without a key, as this deployment is configured."""
    open_routes = "/health, /ready, the chat page's and the console's files (/, /admin, /static/)"
    if not settings.metrics_require_key:
        open_routes += ", /metrics (metrics_require_key is off)"
    return (
        f"every route but {open_routes} needs an API key; keys stored as hashes and compared "
        "in constant time"
    )


def _content(keeping: list[dict[str, str]]) -> str:
    if not keeping:
        return "not stored (every tenant's content policy is none): keyed hashes (HMAC-SHA256) only"
    kept = ", ".join(
        f"{k['tenant']} ({'personal data masked' if k['policy'] == 'redacted' else 'as sent'})"
        for k in keeping
    )
    return (
        f"stored, sealed with AES-256-GCM under a key per data subject, for tenants: {kept}; "
        "other tenants: keyed hashes (HMAC-SHA256) only"
    )


def _minimisation(keeping: list[dict[str, str]]) -> str:
    if not keeping:
        return "data minimisation: no tenant keeps prompt or answer content"
    return (
        "data minimisation by default (content policy none); tenants keeping content: "
        + ", ".join(f"{k['tenant']} ({k['policy']})" for k in keeping)
    )


def to_markdown(record: dict[str, Any]) -> str:
    lines = ["# Record of processing activities (GDPR Art. 30)", ""]
    lines += [f"**Controller:** {record['controller']}", ""]
    lines += [f"**Data protection officer:** {record['data_protection_officer']}", ""]
    system = record["system"]
    lines += ["**System:** " + ", ".join(f"{k} `{v}`" for k, v in system.items()), ""]
    lines += ["## Purposes", *[f"- {p}" for p in record["purposes"]], ""]
    lines += ["## Data subjects", *[f"- {p}" for p in record["data_subjects"]], ""]
    lines += [
        "## Data categories and retention",
        "",
        "| category | what | retention |",
        "|---|---|---|",
    ]
    for c in record["data_categories"]:
        keep = c["retention"]
        if "minimum_days" in c:
            keep += f" (at least {c['minimum_days']} days: {c['legal_basis']})"
        lines.append(f"| {c['category']} | {c['content']} | {keep} |")
    lines += ["", "## Keys", *[f"- {k}: {v}" for k, v in record["keys"].items()], ""]
    recipients = record["recipients"] or ["none"]
    lines += ["## Recipients", *[f"- {r}" for r in recipients], ""]
    lines += ["## Transfers to third countries", record["transfers_to_third_countries"], ""]
    lines += ["## Security measures", *[f"- {m}" for m in record["security_measures"]], ""]
    return "\n".join(lines)


def _recipients(settings: Settings) -> list[str]:
    """Upstream replicas receive prompts: each is a recipient (or processor) of the content."""
    return [
        f"replica '{r.name or r.kind}' ({r.kind}) at {r.url}: receives prompts and returns answers"
        for r in settings.replicas
        if r.url is not None
    ]
