"""Verification of the audit log: every leaf, every stored column, every checkpoint, every
signature.

Works the same on the database and on an export file, and names the first bad entry (or, for a
checkpoint row, the first bad checkpoint). The columns stored beside an entry's body for lookup
(`at`, `kind`, `request_id`) are what search, prove and export read, so each is checked against
the hashed body; a pruned entry's kept columns are checked against the digest in the hashed
record of its prune.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import CheckpointError, Verifier, parse, verify
from sovllm.governance.audit.log import KEY_KIND, PRUNE_KIND, instant, kept_columns_digest, utc
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction

EXPORT_SCHEMA = "sovllm-audit-export/2"
OLD_EXPORT_SCHEMA = "sovllm-audit-export/1"
"""Entries without their columns and no pruned entries: still verifiable, columns unchecked."""


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


@dataclass
class Report:
    size: int = 0
    checkpoints: int = 0
    pruned: int = 0
    first_bad: int | None = None
    first_bad_checkpoint: int | None = None
    """The size of the first checkpoint row found altered, where no entry is to blame."""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str, entry: int | None = None, checkpoint: int | None = None) -> None:
        self.problems.append(message)
        if entry is not None and (self.first_bad is None or entry < self.first_bad):
            self.first_bad = entry
        if checkpoint is not None and (
            self.first_bad_checkpoint is None or checkpoint < self.first_bad_checkpoint
        ):
            self.first_bad_checkpoint = checkpoint

    def summary(self) -> str:
        if self.ok:
            pruned = f" ({self.pruned} pruned past retention)" if self.pruned else ""
            signed = f"{self.checkpoints} signed checkpoint(s)"
            return f"OK: {self.size} entries{pruned}, {signed} verified"
        if self.first_bad is not None:
            where = f"; first bad entry: {self.first_bad}"
        elif self.first_bad_checkpoint is not None:
            where = f"; first bad checkpoint: size {self.first_bad_checkpoint}"
        else:
            where = ""
        return f"FAILED{where}: {self.problems[0]}"


def _parse_body(data: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _check_columns(row: Row, body: dict[str, Any], report: Report) -> None:
    c = row.columns
    if c is None:
        return
    bad = []
    if c.at != _instant_or_none(body.get("time")):
        bad.append("at")
    if c.kind != body.get("kind"):
        bad.append("kind")
    if c.request_id != body.get("request_id"):
        bad.append("request_id")
    if bad:
        what = f"{bad[0]} column does" if len(bad) == 1 else f"{', '.join(bad)} columns do"
        report.fail(f"entry {row.seq} was altered: its {what} not match its content", row.seq)


def _instant_or_none(value: object) -> float | None:
    try:
        return instant(value) if isinstance(value, str) else None
    except ValueError:
        return None


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
        body = _parse_body(data)
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
        cutoff = _instant_or_none(record.get("cutoff"))
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


def _compact(text: str | None) -> merkle.Compact | None:
    try:
        return [(int(n), bytes.fromhex(h)) for n, h in json.loads(text or "")]
    except (ValueError, TypeError):
        return None


Transition = tuple[int, Verifier, Verifier]
"""A signing-key rotation: the seq of its entry, the old key, the new key."""


def key_transitions(bodies: Iterable[tuple[int, str | None]], report: Report) -> list[Transition]:
    """The key chain, from the `audit.signing_key_rotated` entries among (seq, body)."""
    out = []
    for seq, body in bodies:
        if body is None or KEY_KIND not in body:
            continue
        obj = _parse_body(body.encode())
        if obj is None or obj.get("kind") != KEY_KIND:
            continue
        try:
            out.append((seq, Verifier.decode(str(obj["old_key"])),
                        Verifier.decode(str(obj["new_key"]))))  # fmt: skip
        except (KeyError, CheckpointError) as exc:
            report.fail(f"entry {seq}: a key transition without a valid key ({exc})", seq)
    for (_, _, new), (seq, old, _) in itertools.pairwise(out):
        if old != new:
            report.fail(f"entry {seq}: a key transition from a key the log no longer had", seq)
    return out


def _keys_at(size: int, chain: Sequence[Transition], trusted: Verifier) -> list[Verifier]:
    """The keys that must have signed a checkpoint of `size`: the key of its epoch, both at a
    transition (its checkpoint is the tree ending with the transition entry). A trusted key that
    is not in the chain is asked of every checkpoint, which then names it as missing."""
    keys = [chain[0][1], *(new for _, _, new in chain)] if chain else [trusted]
    if trusted not in keys:
        return [trusted]
    needed = []
    lo = 0
    for j, key in enumerate(keys):
        hi = chain[j][0] + 1 if j < len(chain) else None
        if lo <= size and (hi is None or size <= hi):
            needed.append(key)
        lo = hi if hi is not None else lo
    return needed


def check_checkpoints(
    leaves: Sequence[bytes],
    rows: Iterable[CheckpointRow | str],
    verifier: Verifier,
    report: Report,
    chain: Sequence[Transition] = (),
) -> None:
    """Each note is signed by the key of its epoch (both keys at a key transition, `chain`), one
    of them `verifier`, and its root is the tree's root at its size; a row's stored size, root
    and compact range are those of its note and of the tree."""
    parsed = []
    for item in rows:
        row = item if isinstance(item, CheckpointRow) else CheckpointRow(item)
        name = "checkpoint" if row.size is None else f"checkpoint {row.size}"
        try:
            for key in _keys_at(parse(row.note)[0].size, chain, verifier):
                cp = verify(row.note, key)
        except CheckpointError as exc:
            report.fail(f"{name}: {exc}", checkpoint=row.size)
            continue
        if cp.origin != verifier.name:
            report.fail(
                f"{name} is from another log ({cp.origin!r}, not {verifier.name!r})",
                checkpoint=row.size,
            )
            continue
        bad = [c for c, ok in (("size", row.size in (None, cp.size)),
                               ("root", row.root in (None, cp.root.hex()))) if not ok]  # fmt: skip
        if bad:
            report.fail(
                f"checkpoint {cp.size} was altered: its stored {' and '.join(bad)} "
                f"{'does' if len(bad) == 1 else 'do'} not match its signed note",
                checkpoint=cp.size,
            )
        parsed.append((cp, row))
    parsed.sort(key=lambda p: p[0].size)
    signed = {c.size for c, _ in parsed}
    for seq, _old, _new in chain:
        # Whatever key the verifier trusts: a transition only the new key signed could be
        # anyone's (whoever can write the database can append one for a key of their own).
        if seq + 1 not in signed:
            report.fail(f"the key transition at entry {seq} has no checkpoint signed by both keys")
    compacts = merkle.compacts_at(leaves, [c.size for c, _ in parsed if c.size <= len(leaves)])
    checked: list[tuple[int, bytes]] = []
    previous = 0
    for cp, row in parsed:
        if cp.size > len(leaves):
            report.fail(
                f"the log has {len(leaves)} entries but a checkpoint was signed at size "
                f"{cp.size}: entries from {len(leaves)} on were removed",
                len(leaves),
            )
            continue
        if merkle.compact_root(compacts[cp.size]) != cp.root:
            report.fail(
                f"the tree at size {cp.size} does not match its signed checkpoint: an entry "
                f"between {previous} and {cp.size - 1} was changed, removed or inserted",
                # Only a bound: an entry named by its own hash above is more precise.
                previous if report.first_bad is None else None,
            )
            continue
        if row.compact is not None and _compact(row.compact) != compacts[cp.size]:
            # The next checkpoint is computed from this range: a wrong one would sign a wrong
            # tree head.
            report.fail(
                f"checkpoint {cp.size} was altered: its stored compact range is not the tree's",
                checkpoint=cp.size,
            )
        if checked:
            # Between consecutive checkpoints, the RFC 9162 consistency proof must verify.
            old_size, old_root = checked[-1]
            if old_size and cp.size > old_size:
                proof = merkle.consistency_proof(old_size, leaves[: cp.size])
                if not merkle.verify_consistency(old_size, cp.size, old_root, cp.root, proof):
                    report.fail(f"checkpoints {old_size} and {cp.size} are inconsistent")
        checked.append((cp.size, cp.root))
        previous = cp.size
        report.checkpoints += 1


_ROWS = SQL(
    "SELECT seq, body, leaf_hash, at, kind, request_id, pruned_by FROM audit_entries ORDER BY seq"
)
_CHECKPOINTS = SQL("SELECT note, size, root, compact FROM audit_checkpoints ORDER BY size")


def _row(seq: Any, body: Any, leaf: Any, at: Any, kind: Any, rid: Any, by: Any) -> Row:
    return Row(
        int(seq), None if body is None else str(body), str(leaf),
        Columns(float(at), str(kind), None if rid is None else str(rid)),
        None if by is None else int(by),
    )  # fmt: skip


def _read(db: Database) -> tuple[list[Row], list[CheckpointRow]]:
    with raw_transaction(db) as tx:
        rows = [_row(*r) for r in tx.all(_ROWS, {})]
        checkpoints = [CheckpointRow(str(n), int(s), str(r), str(c))
                       for n, s, r, c in tx.all(_CHECKPOINTS, {})]  # fmt: skip
    return rows, checkpoints


def verify_database(db: Database, verifier: Verifier, against: str | None = None) -> Report:
    rows, checkpoints = _read(db)
    report = Report()
    leaves = check_leaves(rows, 0, report)
    chain = key_transitions(((r.seq, r.body) for r in rows), report)
    check_checkpoints(leaves, [*checkpoints, *([against] if against else [])], verifier, report,
                      chain)  # fmt: skip
    return report


# -- export ----------------------------------------------------------------------------------


class ExportError(Exception):
    pass


def export_lines(db: Database, since: float | None, verifier: Verifier) -> Iterable[str]:
    """JSONL: a header with the hashes of the entries before `since`, then entries with every
    stored column, then checkpoints with theirs: the offline verifier checks what verify does."""
    rows, checkpoints = _read(db)
    first = next(
        (i for i, r in enumerate(rows) if since is None or (r.columns and r.columns.at >= since)),
        len(rows),
    )
    transitions = [{"seq": r.seq, "body": r.body} for r in rows[:first]
                   if r.columns is not None and r.columns.kind == KEY_KIND]  # fmt: skip
    yield json.dumps({
        "schema": EXPORT_SCHEMA, "from_seq": first, "verifier_key": verifier.encode(),
        "prefix_leaf_hashes": [r.leaf_hash for r in rows[:first]],
        "prefix_key_transitions": transitions,
    })  # fmt: skip
    for r in rows[first:]:
        c = r.columns
        assert c is not None  # read from the database: always there
        yield json.dumps({
            "seq": r.seq, "at": c.at, "kind": c.kind, "request_id": c.request_id,
            "body": r.body, "leaf_hash": r.leaf_hash, "pruned_by": r.pruned_by,
        })  # fmt: skip
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
    return Row(int(obj["seq"]), _opt(obj, "body", str), str(obj["leaf_hash"]), columns,
               _opt(obj, "pruned_by", int))  # fmt: skip


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
                checkpoints.append(CheckpointRow(
                    str(obj["checkpoint"]), _opt(obj, "size", int), _opt(obj, "root", str),
                    _opt(obj, "compact", str),
                ))  # fmt: skip
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
    check_checkpoints(leaves, [*checkpoints, *([checkpoint] if checkpoint else [])], verifier,
                      report, chain)  # fmt: skip
    return report


# -- lookup ----------------------------------------------------------------------------------


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
    return {"time": record.get("time"), "setting": record.get("setting"),
            "days": record.get("days"), "cutoff": record.get("cutoff"), "by_entry": by}  # fmt: skip


def inclusion(db: Database, request_id: str) -> dict[str, object]:
    """Inclusion proofs of a request's entries in the latest signed tree that holds them.

    An entry pruned past retention has no body: its proof still holds (its leaf hash stays), and
    says when and under which setting it was pruned.
    """
    with raw_transaction(db) as tx:
        leaves = [bytes.fromhex(h) for (h,) in tx.all(
            SQL("SELECT leaf_hash FROM audit_entries ORDER BY seq"), {})]  # fmt: skip
        mine = tx.all(
            SQL("SELECT seq, body, at, kind, pruned_by FROM audit_entries "
                "WHERE request_id = :rid ORDER BY seq"),
            {"rid": request_id},
        )  # fmt: skip
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
        entry: dict[str, object] = {"seq": seq, "leaf_hash": tree[seq].hex(),
                                    "proof": [p.hex() for p in proof]}  # fmt: skip
        if body is None:
            entry.update(kind=str(kind), time=utc(float(at)), body=None,
                         pruned=_pruned_info(db, int(by)) if by is not None else None)  # fmt: skip
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
        "request_id": request_id, "tree_size": size, "root_hash": root.hex(),
        "checkpoint": str(latest[0]) if latest and signed == size else None, "entries": entries,
    }  # fmt: skip


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
            entry: dict[str, Any] = {"seq": int(seq), "time": utc(float(at)), "kind": kind,
                                     "request_id": rid, "pruned_by": by}  # fmt: skip
        else:
            entry = json.loads(body)
            t = _instant_or_none(entry.get("time"))
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
