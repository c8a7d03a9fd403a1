"""The checks of the log's entries: each leaf against its body, each stored column against
the hashed body, sequence numbers without a gap, and each pruned entry against the hashed record
of its prune (its kept columns are digested there)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sovllm.governance.audit import merkle
from sovllm.governance.audit.log import PRUNE_KIND, kept_columns_digest
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.rows import Row, instant_or_none, parse_body


def check_leaves(rows: Sequence[Row], start: int, report: Report) -> list[bytes]:
    """Recompute each leaf from its body and check the row's columns against it; sequence
    numbers must run without a gap; pruned entries must match the record of their prune."""
    leaves: list[bytes] = []
    prunes: dict[int, dict[str, Any]] = {}
    pruned: list[Row] = []
    for i, row in enumerate(rows, start=start):
        if row.seq != i:
            report.fail(
                f"entry {i} is missing: the log goes from {i - 1} to {row.seq} "
                "(deleted or reordered entries)",
                i,
            )
            return leaves
        if row.body is None:
            # Pruned: the leaf cannot be recomputed, but it still feeds the tree that the
            # signed checkpoints fix, so an edit to it is caught there.
            try:
                leaf = bytes.fromhex(row.leaf_hash)
            except ValueError:
                leaf = b""
            if len(leaf) != 32:
                report.fail(f"entry {i} was altered: its stored hash is malformed", i)
            if row.pruned_by is None:
                report.fail(f"entry {i} has no content and no record of a prune: it was erased", i)
            else:
                pruned.append(row)
                report.pruned += 1
            leaves.append(leaf)
            continue
        data = row.body.encode()
        leaf = merkle.leaf_hash(data)
        intact = leaf.hex() == row.leaf_hash
        if not intact:
            report.fail(f"entry {i} was altered: its content does not match its hash", i)
        body = parse_body(data)
        claimed = body.get("seq") if body is not None else None
        if claimed != i or body is None:
            report.fail(f"entry {i} holds the content of entry {claimed}: entries were moved", i)
        else:
            _check_columns(row, body, report)
            if row.pruned_by is not None:
                report.fail(
                    f"entry {i} was altered: it is marked as pruned by entry {row.pruned_by} "
                    "but still has its content",
                    i,
                )
            if intact and body.get("kind") == PRUNE_KIND:
                prunes[i] = body
        leaves.append(leaf)
    report.size = start + len(leaves)
    _check_prunes(pruned, prunes, start, report)
    return leaves


def _check_prunes(
    pruned: Sequence[Row], prunes: dict[int, dict[str, Any]], start: int, report: Report
) -> None:
    """Each pruned entry lies in the range of the prune that names it, before its cutoff, and
    each prune's entries are exactly those its hashed record counts and digests."""
    groups: dict[int, list[tuple[int, float, str, str | None]]] = {}
    for row in pruned:
        by = int(row.pruned_by or 0)
        record = prunes.get(by)
        if record is None:
            report.fail(
                f"entry {row.seq} is marked as pruned by entry {by}, which records no prune",
                row.seq,
            )
            continue
        lo, hi = record.get("from_seq"), record.get("to_seq")
        cutoff = instant_or_none(record.get("cutoff"))
        if not (isinstance(lo, int) and isinstance(hi, int) and lo <= row.seq <= hi < by):
            report.fail(
                f"entry {row.seq} is marked as pruned by entry {by}, whose range is {lo}..{hi}",
                row.seq,
            )
            continue
        c = row.columns
        if c is None or cutoff is None or not c.at < cutoff:
            report.fail(
                f"entry {row.seq} was altered: its at column is not before the cutoff of the "
                f"prune that removed its content (entry {by})",
                row.seq,
            )
            continue
        groups.setdefault(by, []).append((row.seq, c.at, c.kind, c.request_id))
    for by, record in prunes.items():
        lo = record.get("from_seq")
        if not isinstance(lo, int) or lo < start:
            continue  # an export that starts inside the range carries only hashes before it
        mine = groups.get(by, [])
        if len(mine) != record.get("entries") or (
            kept_columns_digest(mine) != record.get("columns_sha256")
        ):
            # The digest covers the range as a whole: this names where it starts, a bound.
            report.fail(
                f"the entries pruned by entry {by} ({lo}..{record.get('to_seq')}) are not those "
                "its record holds: a kept column (at, kind, request_id) or a prune mark was "
                "changed",
                lo if report.first_bad is None else None,
            )


def _check_columns(row: Row, body: dict[str, Any], report: Report) -> None:
    c = row.columns
    if c is None:
        return
    bad = []
    if c.at != instant_or_none(body.get("time")):
        bad.append("at")
    if c.kind != body.get("kind"):
        bad.append("kind")
    if c.request_id != body.get("request_id"):
        bad.append("request_id")
    if bad:
        what = f"{bad[0]} column does" if len(bad) == 1 else f"{', '.join(bad)} columns do"
        report.fail(f"entry {row.seq} was altered: its {what} not match its content", row.seq)
