"""The audit log as verification reads it: entry rows with the columns stored beside their
bodies, checkpoint rows, and the reading of both from the database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sovllm.governance.audit.log import instant
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction


@dataclass(frozen=True)
class Columns:
    """What an entry row stores beside its body, for lookup; checked against the body."""

    at: float
    kind: str
    request_id: str | None


@dataclass(frozen=True)
class Row:
    seq: int
    body: str | None
    """None: pruned past retention (its leaf hash stays)."""
    leaf_hash: str
    columns: Columns | None = None
    """None where they were not carried (an export of schema 1)."""
    pruned_by: int | None = None
    """The seq of the `retention.prune` entry that removed the body."""


@dataclass(frozen=True)
class CheckpointRow:
    note: str
    size: int | None = None
    """The row's columns; None where only the note is at hand (a witness's copy)."""
    root: str | None = None
    compact: str | None = None


def parse_body(data: bytes) -> dict[str, Any] | None:
    """An entry's body as a JSON object, or None where it is not one."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def instant_or_none(value: object) -> float | None:
    """A body's time as an instant, or None where it is not a valid one."""
    try:
        return instant(value) if isinstance(value, str) else None
    except ValueError:
        return None


_ROWS = SQL(
    "SELECT seq, body, leaf_hash, at, kind, request_id, pruned_by FROM audit_entries ORDER BY seq"
)
_CHECKPOINTS = SQL("SELECT note, size, root, compact FROM audit_checkpoints ORDER BY size")


def _row(seq: Any, body: Any, leaf: Any, at: Any, kind: Any, rid: Any, by: Any) -> Row:
    columns = Columns(float(at), str(kind), None if rid is None else str(rid))
    return Row(
        int(seq),
        None if body is None else str(body),
        str(leaf),
        columns,
        None if by is None else int(by),
    )


def read_log(db: Database) -> tuple[list[Row], list[CheckpointRow]]:
    """Every entry row and every checkpoint row, in one transaction."""
    with raw_transaction(db) as tx:
        rows = [_row(*r) for r in tx.all(_ROWS, {})]
        checkpoints = [
            CheckpointRow(str(n), int(s), str(r), str(c)) for n, s, r, c in tx.all(_CHECKPOINTS, {})
        ]
    return rows, checkpoints
