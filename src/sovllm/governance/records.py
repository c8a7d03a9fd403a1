"""The GDPR Art. 30 record of processing activities, built from the live configuration."""

from __future__ import annotations

from typing import Any

from sovllm.config import Settings
from sovllm.store.db import database_url


def record_of_processing(settings: Settings) -> dict[str, Any]:
    db = database_url(settings.database_url, settings.data_dir)
    backend = db.split(":", 1)[0].split("+", 1)[0]
    r = settings.retention
    return {
        "controller": "the organisation operating this sovllm deployment",
        "system": {
            "name": "sovllm",
            "model": settings.model,
            "bind": settings.host,
            "storage": backend,
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
                "counts, timings, outcome, personal-data findings per type (counts only)",
                "retention_days": r.audit_days,
                "minimum_days": 183,
                "legal_basis": "AI Act Art. 19(1), 26(6)",
            },
            {
                "category": "prompt and answer content",
                "content": "not stored: keyed hashes (HMAC-SHA256) only",
                "retention_days": r.content_days,
            },
            {
                "category": "usage counters",
                "content": "requests and tokens per key, tenant and day",
                "retention_days": r.usage_days,
            },
            {
                "category": "API keys",
                "content": "SHA-256 of each key, a 4-character prefix, "
                "tenant, role, limits, expiry",
                "retention": "until deleted",
            },
        ],
        "recipients": _recipients(settings),
        "transfers_to_third_countries": "none: inference runs on the organisation's hardware "
        "and nothing leaves the machine"
        + (
            f"; upstreams allowed outside private networks: {', '.join(settings.egress_allow)}"
            if settings.egress_allow
            else ""
        ),
        "security_measures": [
            "every route but /health and /ready needs an API key; keys stored as hashes and "
            "compared in constant time",
            "roles: user, auditor, admin",
            "binds to 127.0.0.1 unless configured otherwise",
            "tamper-evident audit log: RFC 6962 Merkle tree with Ed25519-signed checkpoints "
            "(C2SP), verifiable offline",
            "data minimisation by default: no prompt or answer content is stored",
            "per-key and per-tenant quotas enforced in the database across gateways",
        ],
    }


def to_markdown(record: dict[str, Any]) -> str:
    lines = ["# Record of processing activities (GDPR Art. 30)", ""]
    lines += [f"**Controller:** {record['controller']}", ""]
    system = record["system"]
    lines += ["**System:** " + ", ".join(f"{k} `{v}`" for k, v in system.items()), ""]
    lines += ["## Purposes", *[f"- {p}" for p in record["purposes"]], ""]
    lines += ["## Data subjects", *[f"- {p}" for p in record["data_subjects"]], ""]
    lines += ["## Data categories and retention", "",
              "| category | what | retention |", "|---|---|---|"]  # fmt: skip
    for c in record["data_categories"]:
        keep = f"{c['retention_days']} days" if "retention_days" in c else c["retention"]
        if "minimum_days" in c:
            keep += f" (at least {c['minimum_days']}: {c['legal_basis']})"
        lines.append(f"| {c['category']} | {c['content']} | {keep} |")
    recipients = record["recipients"] or ["none"]
    lines += ["", "## Recipients", *[f"- {r}" for r in recipients], ""]
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
