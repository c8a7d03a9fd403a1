"""The model allow-list at start-up: before any weights are loaded or any replica is routed to,
each replica's weights are identified and looked up (docs/oversight.md, "Models").

- the embedded engine and started workers: the SHA-256 of the GGUF file they load;
- a started vLLM replica: the hash of the file or folder in its `model` (what it is launched
  with; a model id vLLM would fetch cannot be hashed here, so it is refused);
- a replica sovllm does not start (`url` or `discovery`): it cannot be hashed from here, so it
  must declare `weights_sha256` in its settings, and that is what is looked up.

Under `models.allow_list: enforce` any replica that fails is refused: `serve` exits naming it,
its file and hash, with a `model.refuse` audit entry each. Under `warn` it is served, with a
`model.warn` entry and a log line. Under `off` nothing is hashed and `serve` warns once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sovllm.config import Settings
from sovllm.engines.weights import WeightsError, hash_weights
from sovllm.governance.audit import records
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.provenance import allowlist, entries
from sovllm.serve.replicas import ReplicaPlan

log = logging.getLogger("sovllm.models")


class ModelNotApproved(Exception):
    """Under `enforce`, a replica's weights are not on the allow-list; the message names each."""


@dataclass(frozen=True)
class Identity:
    path: str | None
    sha256: str | None
    problem: str | None = None
    """Why the weights could not be identified."""


def identify(settings: Settings, p: ReplicaPlan) -> Identity:
    """Which weights a planned replica serves, as far as the gateway can know."""
    e = p.entry
    started = p.discovery is None and (p.argv is not None or p.kind == "local")
    if not started:
        declared = e.weights_sha256 if e is not None else None
        if declared is None:
            return Identity(
                p.url,
                None,
                "a replica sovllm does not start must declare its weights' SHA-256 "
                "(`weights_sha256` in its replica settings)",
            )
        return Identity(p.url, declared)
    where = Path(e.model) if p.kind == "vllm" and e is not None and e.model else Path(p.model)
    if p.kind == "vllm" and not where.exists():
        return Identity(
            str(where),
            None,
            "vLLM is launched with a model id, not a local file or folder: its weights cannot "
            "be hashed (give `model` as the local folder)",
        )
    try:
        found = hash_weights(where, settings.data_dir / "cache")
    except WeightsError as exc:
        return Identity(str(where), None, str(exc))
    declared = e.weights_sha256 if e is not None else None
    if declared is not None and declared != found.sha256:
        return Identity(str(where), found.sha256, f"its settings declare weights_sha256 {declared}")
    return Identity(str(where), found.sha256)


def _problem(audit: AuditLog, ident: Identity) -> str | None:
    if ident.problem is not None:
        return ident.problem
    assert ident.sha256 is not None
    found = allowlist.lookup(audit, ident.sha256)
    if found is None:
        return "not on the model allow-list"
    if found.problem is not None:
        return f"its allow-list row fails verification: {found.problem}"
    if not found.approval.active:
        return "revoked from the model allow-list"
    return None


def check(settings: Settings, plans: list[ReplicaPlan], audit: AuditLog) -> None:
    """Check every planned replica against the allow-list (see the module doc); raise
    ModelNotApproved under `enforce` when any fails."""
    mode = settings.models.allow_list
    if mode == "off":
        log.warning(
            "no model allow-list is enforced (models.allow_list: off): any weights are "
            "served; approve them with `sovllm models approve` and set models.allow_list"
        )
        return
    refused = []
    for p in plans:
        ident = identify(settings, p)
        problem = _problem(audit, ident)
        if problem is None or mode == "warn":
            p.weights_sha256 = ident.sha256 or ""
        if problem is None:
            continue
        kind = records.MODEL_REFUSE if mode == "enforce" else records.MODEL_WARN
        body = entries.refused(p.name, ident.path, ident.sha256, problem)
        audit.append(kind, body).result(timeout=30)
        shown = f"replica '{p.name}': weights {ident.path}"
        if ident.sha256 is not None:
            shown += f" (sha256 {ident.sha256})"
        line = f"{shown}: {problem}"
        if mode == "warn":
            log.warning("%s; served anyway (models.allow_list: warn)", line)
        else:
            refused.append(line)
    if refused:
        hint = "approve weights with `sovllm models approve FILE|DIR` (docs/oversight.md)"
        raise ModelNotApproved(
            "refused by the model allow-list: " + "; ".join(refused) + f"; {hint}"
        )
