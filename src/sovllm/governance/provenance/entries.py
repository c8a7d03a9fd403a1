"""The audit bodies of the model allow-list and the evaluations (kinds in audit/records.py):
`model.approve`, `model.revoke`, `model.refuse`, `model.warn`, `model.eval` (docs/audit.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # allowlist.py imports this module
    from sovllm.governance.provenance.allowlist import Approval


def approve(a: Approval, path: str, forced: Mapping[str, Any] | None) -> dict[str, Any]:
    """An approval as signed (the row's signature: the allow-list is checked against it);
    `forced`: the failing evaluation it was approved despite (`--force`), if any."""
    body: dict[str, Any] = {
        "actor": a.approved_by,
        "sha256": a.sha256,
        "weights_kind": a.kind,
        "path": path,
        "name": a.name,
        "source": a.source,
        "licence": a.licence,
        "files": a.files,
        "signature": a.signature,
        "verifier_key": a.verifier_key,
    }
    if forced is not None:
        body["forced_despite_eval"] = dict(forced)
    return body


def revoke(a: Approval) -> dict[str, Any]:
    return {
        "actor": a.revoked_by,
        "sha256": a.sha256,
        "name": a.name,
        "signature": a.signature,
        "verifier_key": a.verifier_key,
    }


def refused(replica: str, path: str | None, sha256: str | None, reason: str) -> dict[str, Any]:
    """Weights `serve` would not load or route to (`model.refuse`), or served anyway under
    `models.allow_list: warn` (`model.warn`): which replica, which file or folder, its hash
    (None: not knowable, e.g. a remote replica that declares none) and why."""
    return {"replica": replica, "path": path, "sha256": sha256, "reason": reason}


def evaluated(
    actor: Mapping[str, object],
    model: str,
    sha256: str,
    suite: str,
    version: str,
    scores: Mapping[str, float],
    thresholds: Mapping[str, float],
    url: str,
) -> dict[str, Any]:
    """An evaluation run (`sovllm eval`): the served model, its weights' hash, the suite and
    its version, each check's score (0-1) and threshold, and whether all were met."""
    below = sorted(k for k, t in thresholds.items() if scores.get(k, 0.0) < t)
    return {
        "actor": dict(actor),
        "model": model,
        "sha256": sha256,
        "suite": suite,
        "suite_version": version,
        "scores": dict(scores),
        "thresholds": dict(thresholds),
        "below_threshold": below,
        "passed": not below,
        "url": url,
    }
