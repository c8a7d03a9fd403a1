"""The audit export (JSONL) and its verification with no database, which checks what the
database's verification does (verify.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import Verifier
from sovllm.governance.audit.checkpoint_checks import check_checkpoints, key_transitions
from sovllm.governance.audit.entry_checks import check_leaves
from sovllm.governance.audit.log import KEY_KIND
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.rows import CheckpointRow, Columns, Row, read_log
from sovllm.store.db import Database

EXPORT_SCHEMA = "sovllm-audit-export/2"
OLD_EXPORT_SCHEMA = "sovllm-audit-export/1"
"""Entries without their columns and no pruned entries: still verifiable, columns unchecked."""


class ExportError(Exception):
    """The export cannot be read: not an export, or a malformed line (named)."""


def export_lines(db: Database, since: float | None, verifier: Verifier) -> Iterable[str]:
    """JSONL: a header with the hashes of the entries before `since`, then entries with every
    stored column, then checkpoints with theirs: the offline verifier checks what verify does."""
    rows, checkpoints = read_log(db)
    first = next(
        (i for i, r in enumerate(rows) if since is None or (r.columns and r.columns.at >= since)),
        len(rows),
    )
    transitions = [
        {"seq": r.seq, "body": r.body}
        for r in rows[:first]
        if r.columns is not None and r.columns.kind == KEY_KIND
    ]
    yield json.dumps(
        {
            "schema": EXPORT_SCHEMA,
            "from_seq": first,
            "verifier_key": verifier.encode(),
            "prefix_leaf_hashes": [r.leaf_hash for r in rows[:first]],
            "prefix_key_transitions": transitions,
        }
    )
    for r in rows[first:]:
        c = r.columns
        assert c is not None  # read from the database: always there
        yield json.dumps(
            {
                "seq": r.seq,
                "at": c.at,
                "kind": c.kind,
                "request_id": c.request_id,
                "body": r.body,
                "leaf_hash": r.leaf_hash,
                "pruned_by": r.pruned_by,
            }
        )
    for cp in checkpoints:
        yield json.dumps(
            {"checkpoint": cp.note, "size": cp.size, "root": cp.root, "compact": cp.compact}
        )


def _opt(obj: dict[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{key} is not a {kind.__name__}")
    return value


def _export_row(obj: dict[str, Any], with_columns: bool) -> Row:
    if not with_columns:
        return Row(int(obj["seq"]), str(obj["body"]), str(obj["leaf_hash"]))
    at = obj["at"]
    if not isinstance(at, int | float) or isinstance(at, bool):
        raise TypeError("at is not a number")
    columns = Columns(float(at), str(obj["kind"]), _opt(obj, "request_id", str))
    return Row(
        int(obj["seq"]),
        _opt(obj, "body", str),
        str(obj["leaf_hash"]),
        columns,
        _opt(obj, "pruned_by", int),
    )


def verify_export(
    lines: Iterable[str], verifier: Verifier, checkpoint: str | None = None
) -> Report:
    """Verify an export with no database; a malformed line is named."""
    report = Report()
    prefix: list[bytes] = []
    start = 0
    with_columns = True
    rows: list[Row] = []
    checkpoints: list[CheckpointRow | str] = []
    prefix_keys: list[tuple[int, str | None]] = []
    n = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if n == 1:
                if obj.get("schema") not in (EXPORT_SCHEMA, OLD_EXPORT_SCHEMA):
                    raise ExportError(f"line 1: not a {EXPORT_SCHEMA} export")
                with_columns = obj["schema"] == EXPORT_SCHEMA
                start = int(obj["from_seq"])
                prefix = [bytes.fromhex(h) for h in obj["prefix_leaf_hashes"]]
                if len(prefix) != start:
                    raise ExportError("line 1: from_seq does not match the prefix hashes")
                for t in obj.get("prefix_key_transitions", []):
                    seq, body = int(t["seq"]), str(t["body"])
                    if not 0 <= seq < start or merkle.leaf_hash(body.encode()) != prefix[seq]:
                        raise ExportError(f"line 1: the key transition {seq} is not its entry")
                    prefix_keys.append((seq, body))
            elif "checkpoint" in obj:
                checkpoints.append(
                    CheckpointRow(
                        str(obj["checkpoint"]),
                        _opt(obj, "size", int),
                        _opt(obj, "root", str),
                        _opt(obj, "compact", str),
                    )
                )
            else:
                rows.append(_export_row(obj, with_columns))
        except ExportError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExportError(f"line {n}: malformed ({exc.__class__.__name__}: {exc})") from None
    if n == 0:
        raise ExportError("the export is empty")
    leaves = prefix + check_leaves(rows, start, report)
    chain = key_transitions([*prefix_keys, *((r.seq, r.body) for r in rows)], report)
    extra = [checkpoint] if checkpoint else []
    check_checkpoints(leaves, [*checkpoints, *extra], verifier, report, chain)
    return report
