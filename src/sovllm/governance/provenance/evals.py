"""Evaluation results as the audit log records them (`model.eval`, written by `sovllm eval`):
the newest one of a weights hash decides whether `sovllm models approve` may approve it."""

from __future__ import annotations

import json
from typing import Any

from sovllm.governance.audit import records
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction

_EVALS = SQL(
    "SELECT seq, body FROM audit_entries WHERE kind = :kind AND body IS NOT NULL ORDER BY seq DESC"
)


def evaluations(db: Database) -> list[dict[str, Any]]:
    """Every recorded evaluation, newest first, each with its entry's `seq`."""
    with raw_transaction(db) as tx:
        rows = tx.all(_EVALS, {"kind": records.MODEL_EVAL})
    return [{**json.loads(body), "seq": int(seq)} for seq, body in rows]


def latest_eval(db: Database, sha256: str) -> dict[str, Any] | None:
    """The newest evaluation of these weights, or None."""
    return next((e for e in evaluations(db) if e.get("sha256") == sha256), None)


def latest_per_model(db: Database) -> list[dict[str, Any]]:
    """The newest evaluation of each (weights hash, suite)."""
    seen: set[tuple[str, str]] = set()
    newest = []
    for e in evaluations(db):
        key = (str(e.get("sha256")), str(e.get("suite")))
        if key not in seen:
            seen.add(key)
            newest.append(e)
    return newest
