"""Lookups in the audit log: inclusion proofs of a request's entries, search by request,
tenant or time, and the newest entry of a kind. The columns find candidates; the hashed body
decides, and a row that contradicts it is named, never returned as true."""

from __future__ import annotations

import json
from typing import Any

from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import CheckpointError, parse
from sovllm.governance.audit.log import PRUNE_KIND, utc
from sovllm.governance.audit.rows import instant_or_none
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction


class IntegrityError(LookupError):
    """A lookup found rows that contradict their hashed content: the log was edited."""


def _pruned_info(db: Database, by: int) -> dict[str, object]:
    """When and under which setting an entry was pruned, from the hashed record of its prune."""
    with raw_transaction(db) as tx:
        row = tx.one(SQL("SELECT body FROM audit_entries WHERE seq = :seq"), {"seq": by})
    record = json.loads(row[0]) if row and row[0] is not None else {}
    if record.get("kind") != PRUNE_KIND:
        raise IntegrityError(
            f"entry {by}, named as the record of a prune, is not one: the log was edited "
            "(run `sovllm audit verify`)"
        )
    return {
        "time": record.get("time"),
        "setting": record.get("setting"),
        "days": record.get("days"),
        "cutoff": record.get("cutoff"),
        "by_entry": by,
    }


def inclusion(db: Database, request_id: str) -> dict[str, object]:
    """Inclusion proofs of a request's entries in the latest signed tree that holds them.

    An entry pruned past retention has no body: its proof still holds (its leaf hash stays), and
    says when and under which setting it was pruned.
    """
    with raw_transaction(db) as tx:
        leaves = [
            bytes.fromhex(h)
            for (h,) in tx.all(SQL("SELECT leaf_hash FROM audit_entries ORDER BY seq"), {})
        ]
        mine = tx.all(
            SQL(
                "SELECT seq, body, at, kind, pruned_by FROM audit_entries "
                "WHERE request_id = :rid ORDER BY seq"
            ),
            {"rid": request_id},
        )
        latest = tx.one(SQL("SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"), {})
    if not mine:
        raise LookupError(f"no audit entry for request {request_id!r}")
    try:  # the note's own size, not the row's column
        signed = parse(str(latest[0]))[0].size if latest else None
    except CheckpointError as exc:
        raise IntegrityError(f"the latest checkpoint is unreadable: {exc}") from None
    if signed is not None and signed > len(leaves):
        raise IntegrityError(
            f"the log has {len(leaves)} entries but its latest checkpoint was signed at size "
            f"{signed}: entries were removed (run `sovllm audit verify`)"
        )
    size = signed if signed is not None and signed > int(mine[-1][0]) else len(leaves)
    tree = leaves[:size]
    root = merkle.root(tree)
    entries = []
    for seq, body, at, kind, by in mine:
        seq = int(seq)
        if seq >= size:  # rows missing below it: its sequence number no longer indexes its leaf
            raise IntegrityError(
                f"entry {seq} lies beyond the log's {size} entries: entries were removed "
                "(run `sovllm audit verify`)"
            )
        proof = merkle.inclusion_proof(seq, tree)
        if not merkle.verify_inclusion(seq, size, tree[seq], proof, root):
            raise IntegrityError(f"entry {seq}'s proof does not verify (run `sovllm audit verify`)")
        entry: dict[str, object] = {
            "seq": seq,
            "leaf_hash": tree[seq].hex(),
            "proof": [p.hex() for p in proof],
        }
        if body is None:
            entry.update(
                kind=str(kind),
                time=utc(float(at)),
                body=None,
                pruned=_pruned_info(db, int(by)) if by is not None else None,
            )
        else:
            content = json.loads(body)
            if content.get("request_id") != request_id or content.get("seq") != seq:
                raise IntegrityError(
                    f"entry {seq} is filed under request {request_id!r} but its content says "
                    "otherwise: the log was edited (run `sovllm audit verify`)"
                )
            entry["body"] = content
        entries.append(entry)
    return {
        "request_id": request_id,
        "tree_size": size,
        "root_hash": root.hex(),
        "checkpoint": str(latest[0]) if latest and signed == size else None,
        "entries": entries,
    }


def search(
    db: Database,
    request_id: str | None = None,
    tenant: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> list[dict[str, object]]:
    """Entries by request id, tenant or time, newest first, with their sequence numbers.

    The columns find candidates; the hashed body decides: a row whose columns were edited to
    match a query is not returned for it (`sovllm audit verify` names it). A pruned entry is
    returned as its kept columns and the seq of its prune record.
    """
    clauses: list[str] = []
    params: dict[str, object] = {}
    if request_id is not None:
        clauses.append("request_id = :rid")
        params["rid"] = request_id
    if since is not None:
        clauses.append("at >= :since")
        params["since"] = since
    if until is not None:
        clauses.append("at < :until")
        params["until"] = until
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    # The tenant lives inside the JSON body: filter after reading, with a bounded scan.
    scan = limit if tenant is None else limit * 20
    sql = SQL(
        f"SELECT seq, body, at, kind, request_id, pruned_by FROM audit_entries {where} "
        f"ORDER BY seq DESC LIMIT {int(scan)}"
    )
    with raw_transaction(db) as tx:
        rows = tx.all(sql, params)
    out: list[dict[str, object]] = []
    for seq, body, at, kind, rid, by in rows:
        if body is None:
            if tenant is not None:
                continue  # who it was is gone with the body
            entry: dict[str, Any] = {
                "seq": int(seq),
                "time": utc(float(at)),
                "kind": kind,
                "request_id": rid,
                "pruned_by": by,
            }
        else:
            entry = json.loads(body)
            t = instant_or_none(entry.get("time"))
            if (
                (request_id is not None and entry.get("request_id") != request_id)
                or (since is not None and (t is None or t < since))
                or (until is not None and (t is None or t >= until))
            ):
                continue
        who = entry.get("principal") or entry.get("actor") or {}
        if tenant is not None and who.get("tenant") != tenant:
            continue
        out.append({"seq": int(seq), "entry": entry})
        if len(out) >= limit:
            break
    return out


def latest_of_kind(db: Database, kind: str) -> dict[str, Any] | None:
    """The newest entry of one kind (e.g. the last `audit.verify`) that still has its body."""
    sql = SQL(
        "SELECT body FROM audit_entries WHERE kind = :kind AND body IS NOT NULL "
        "ORDER BY seq DESC LIMIT 1"
    )
    with raw_transaction(db) as tx:
        row = tx.one(sql, {"kind": kind})
    if row is None:
        return None
    entry: dict[str, Any] = json.loads(row[0])
    return entry if entry.get("kind") == kind else None
