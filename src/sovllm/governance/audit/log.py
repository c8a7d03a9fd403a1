"""The append-only audit log: entries as Merkle leaves in the database, signed checkpoints.

Appends go through one writer thread per process that commits whatever is queued in a single
transaction (group commit), so the log is never the bottleneck. Sequence numbers are assigned
inside that transaction under the database's write lock (SQLite) or an advisory lock
(PostgreSQL), so several gateways share one gap-free log. `append()` returns a future that
resolves once the entry is durable.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovllm.governance.audit import merkle, records
from sovllm.governance.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    sign_by,
    verify,
)
from sovllm.governance.audit.head import Head
from sovllm.store.db import Database
from sovllm.store.raw import SQL, RawTransaction, raw_transaction

SCHEMA_VERSION = 1
log = logging.getLogger("sovllm.audit")

_LOCK = SQL("SELECT pg_advisory_xact_lock(7263543)")
_NEXT = SQL("SELECT coalesce(max(seq) + 1, 0) FROM audit_entries")
_INSERT = SQL(
    "INSERT INTO audit_entries (seq, at, kind, request_id, body, leaf_hash) "
    "VALUES (:seq, :at, :kind, :rid, :body, :leaf)"
)
_LEAVES_FROM = SQL("SELECT leaf_hash FROM audit_entries WHERE seq >= :start ORDER BY seq")
_LATEST = SQL("SELECT size, note, compact FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
_ROOT_AT = SQL("SELECT root FROM audit_checkpoints WHERE size = :size")
_INSERT_CHECKPOINT = SQL(
    "INSERT INTO audit_checkpoints (size, root, note, compact) "
    "VALUES (:size, :root, :note, :compact)"
)
PRUNE_KIND = "retention.prune"
"""The entry that records a prune; never pruned itself, so every pruned entry keeps its record."""
KEY_KIND = "audit.signing_key_rotated"
"""A key transition: the old and new verifier keys, in the tree the checkpoint signed by both
covers. Never pruned: the chain of keys is read from these entries (docs/audit.md)."""
PSEUDONYM_KEY_KIND = "privacy.pseudonym_key_created"
PSEUDONYM_ROTATED_KIND = "privacy.pseudonym_key_rotated"
"""The pseudonym key's id at creation and at each rotation. Never pruned: a gateway refuses to
start with a pseudonym key file whose id is not the newest recorded (governance/audit)."""
_LATEST_KEY = SQL(
    "SELECT body FROM audit_entries WHERE kind = :kind AND body IS NOT NULL "
    "ORDER BY seq DESC LIMIT 1"
)


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


def instant(time_text: str) -> float:
    """The `at` column's value for a body's `time`: exact, so verify can compare with ==."""
    return dt.datetime.fromisoformat(time_text).timestamp()


def stamp(ts: float) -> tuple[float, str]:
    """A clock reading as the entry stores it: (`at` column, body `time`), equal to the µs."""
    text = utc(ts)
    return instant(text), text


def kept_columns_digest(rows: Iterable[tuple[int, float, str, str | None]]) -> str:
    """SHA-256 over the columns a pruned entry keeps (seq, at, kind, request_id), by seq.

    The prune entry carries it in its hashed body, so an edit to those columns after the body is
    gone is still detected.
    """
    items = sorted([int(seq), float(at), str(kind), rid] for seq, at, kind, rid in rows)
    data = json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Pending:
    kind: str
    request_id: str | None
    fields: dict[str, Any]
    at: float
    done: concurrent.futures.Future[int]


class AuditLog:
    def __init__(
        self,
        db: Database,
        signer: Signer,
        origin: str,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.clock = clock
        """Wall clock of entries; tests pass a simulated one (e.g. to age entries past retention)."""
        self.signer = signer
        self.pseudonym_key = signer.secret
        """The HMAC key of keyed_hash (governance/audit/__init__.py): open_audit sets the
        pseudonym key file's; derived from the signing key where none is given (tests)."""
        self.pseudonym_file: Path | None = None
        """Re-read at most once a second, so a rotation by another process applies."""
        self.pseudonym_read_at = time.monotonic()
        self.pseudonyms_retired: Path | None = None
        """Earlier epochs' pseudonym keys, kept only to find their content for erasure."""
        self.key_file: Path | None = None
        """The signing key's file (open_audit sets it): after a rotation by another process,
        the new key is read from it or from its `.next` side file (audit/keys.py)."""
        self.head: Head | None = None
        """This host's last signed checkpoint (head.py; open_audit sets it): nothing is signed
        while the database no longer holds it."""
        self.origin = origin
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._last_checkpoint_at = time.monotonic()
        self._since_checkpoint = 0

    # -- writing -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sovllm-audit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, sign a last checkpoint, stop the writer."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self._since_checkpoint:
            try:
                self.checkpoint()
            except CheckpointError as exc:
                log.error("audit checkpoint refused: %s", exc)

    def append(
        self, kind: str, fields: Mapping[str, Any], request_id: str | None = None
    ) -> concurrent.futures.Future[int]:
        """Queue an entry; the future gives its sequence number once it is committed."""
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        pending = _Pending(kind, request_id, dict(fields), self.clock(), done)
        if self._thread is None:  # no writer (CLI use): write it now
            self._write([pending])
        else:
            self._queue.put(pending)
        return done

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while True:  # everything already queued joins this commit
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with raw_transaction(self.db) as tx:
                first = self._next_seq(tx)
                for seq, item in enumerate(batch, start=first):
                    self._insert(tx, seq, item.kind, item.fields, item.request_id, item.at)
        except Exception as exc:
            log.exception("audit append failed")
            for item in batch:
                item.done.set_exception(exc)
            return
        for seq, item in enumerate(batch, start=first):
            item.done.set_result(seq)
        self._since_checkpoint += len(batch)
        due = time.monotonic() - self._last_checkpoint_at >= self.checkpoint_seconds
        if self._since_checkpoint >= self.checkpoint_every or due:
            try:
                self.checkpoint()
            except CheckpointError as exc:  # a refusal that names its cause: no stack
                log.error("audit checkpoint refused: %s", exc)
            except Exception:
                log.exception("audit checkpoint failed")

    def append_in(
        self,
        tx: RawTransaction,
        kind: str,
        fields: Mapping[str, Any],
        request_id: str | None = None,
    ) -> int:
        """Write an entry inside the caller's transaction, atomic with its other statements
        (a prune and the entry that records it); returns its sequence number."""
        seq = self._next_seq(tx)
        self._insert(tx, seq, kind, fields, request_id, self.clock())
        return seq

    def lock(self, tx: RawTransaction) -> None:
        """Take the log's write lock for the transaction: SQLite's BEGIN IMMEDIATE already holds
        the file's; on PostgreSQL an advisory lock (re-entrant) that every appender takes."""
        if self.db.backend == "postgresql":
            tx.run(_LOCK, {})

    def _next_seq(self, tx: RawTransaction) -> int:
        """Under the log's lock, so entries from every gateway form one gap-free sequence."""
        self.lock(tx)
        row = tx.one(_NEXT, {})
        return int(row[0]) if row else 0

    def _insert(
        self,
        tx: RawTransaction,
        seq: int,
        kind: str,
        fields: Mapping[str, Any],
        request_id: str | None,
        at: float,
    ) -> None:
        at_column, time_text = stamp(at)
        body = {
            "v": SCHEMA_VERSION,
            "seq": seq,
            "time": time_text,
            "kind": kind,
            "request_id": request_id,
            **fields,
        }
        data = canonical(body)
        tx.run(
            _INSERT,
            {
                "seq": seq,
                "at": at_column,
                "kind": kind,
                "rid": request_id,
                "body": data.decode(),
                "leaf": merkle.leaf_hash(data).hex(),
            },
        )

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Sign the current tree head and store it (unless already signed); return the note.

        Starts from the last checkpoint's compact range, so it reads only the new leaves.
        """
        with raw_transaction(self.db) as tx:
            self.lock(tx)
            self._follow_rotation(tx)
            note = self._checkpoint_in(tx, [self.signer])
        self._keep_head(note)
        self._since_checkpoint = 0
        self._last_checkpoint_at = time.monotonic()
        return note

    def head_note(self) -> str | None:
        """This host's last signed checkpoint, for verify to check the tree against."""
        return None if self.head is None else self.head.note()

    def _keep_head(self, note: str) -> None:
        """After the commit: a note kept before it could name a checkpoint that never was."""
        if self.head is not None:
            self.head.keep(note)

    def _check_head(self, tx: RawTransaction) -> None:
        """Refuse to sign a tree that may have been rewritten: the database must still hold
        the checkpoint this host signed last (head.py)."""
        kept = None if self.head is None else self.head.checkpoint()
        if kept is None:
            return
        row = tx.one(_ROOT_AT, {"size": kept.size})
        if row is None or str(row[0]) != kept.root.hex():
            assert self.head is not None
            raise CheckpointError(
                f"the database no longer holds the checkpoint this host signed at size "
                f"{kept.size} ({self.head.path}): checkpoints or entries were deleted or "
                "rewritten, so nothing more is signed; `sovllm audit verify` names what changed "
                "(a database restored or replaced on purpose: delete that file)"
            )

    def _start_from(self, latest: tuple[Any, ...], signers: list[Signer]) -> merkle.Compact:
        """The latest checkpoint's compact range, once it is shown to be that checkpoint's: its
        note is signed by a key signing now, and the range folds to the note's root. The range
        itself is not signed; unchecked, a database writer could set it to a rewritten tree's
        and have the next checkpoint sign that."""
        size, note = int(latest[0]), str(latest[1])
        checkpoint = None
        for signer in signers:
            try:
                checkpoint = verify(note, signer.verifier)
                break
            except CheckpointError:
                continue
        compact = [(int(n), bytes.fromhex(h)) for n, h in json.loads(latest[2])]
        if (
            checkpoint is None
            or checkpoint.size != size
            or merkle.compact_root(compact) != checkpoint.root
        ):
            raise CheckpointError(
                f"the latest checkpoint row (size {size}) is not one this log signed as it "
                "stands (its note, signature or stored subtrees were altered), so nothing more "
                "is signed; `sovllm audit verify` names what changed"
            )
        return compact

    def _checkpoint_in(self, tx: RawTransaction, signers: list[Signer]) -> str:
        """Under the log's lock: sign the tree head by `signers` unless already signed."""
        self._check_head(tx)
        latest = tx.one(_LATEST, {})
        start = int(latest[0]) if latest else 0
        compact = self._start_from(latest, signers) if latest else []
        new = [bytes.fromhex(r[0]) for r in tx.all(_LEAVES_FROM, {"start": start})]
        if latest is not None and not new:
            return str(latest[1])
        merkle.extend(compact, new)
        size, root = start + len(new), merkle.compact_root(compact)
        note = sign_by(Checkpoint(self.origin, size, root), signers)
        tx.run(
            _INSERT_CHECKPOINT,
            {
                "size": size,
                "root": root.hex(),
                "note": note,
                "compact": json.dumps([[n, h.hex()] for n, h in compact]),
            },
        )
        return note

    def current_signer(self) -> Signer:
        """The signer to sign anything else with (e.g. an erasure receipt): the key the log's
        last transition names (CheckpointError where this process cannot read it)."""
        with raw_transaction(self.db) as tx:
            self._follow_rotation(tx)
        return self.signer

    def _follow_rotation(self, tx: RawTransaction) -> None:
        """Sign with the key the log's last transition names, not a retired one: a rotation
        run by another process is followed by reading its key file (or the `.next` side file
        a rotation writes first). Without access to it, refuse to sign."""
        row = tx.one(_LATEST_KEY, {"kind": KEY_KIND})
        if row is None:
            return
        current = str(json.loads(row[0])["new_key"])
        if current == self.signer.verifier.encode():
            return
        if self.key_file is not None:
            for path in (self.key_file.with_name(self.key_file.name + ".next"), self.key_file):
                try:
                    signer = Signer.load(path, self.origin)
                except (OSError, ValueError):
                    continue
                if signer.verifier.encode() == current:
                    self.signer = signer
                    return
        raise CheckpointError(
            f"the signing key was rotated to {current}, which this process cannot read: "
            "restart it with the new key (no checkpoint is signed with a retired key)"
        )

    def rotate_key(self, new: Signer, fields: Mapping[str, Any]) -> tuple[int, str]:
        """The key transition, in one transaction under the log's lock: an entry naming the old
        and the new verifier keys (with `fields`, e.g. the actor), and a checkpoint of the tree
        that ends with it, signed by both. From then on this log signs with `new`."""
        with raw_transaction(self.db) as tx:
            self.lock(tx)
            self._follow_rotation(tx)
            old = self.signer
            seq = self.append_in(
                tx,
                KEY_KIND,
                records.signing_key_rotated(fields, old.verifier.encode(), new.verifier.encode()),
            )
            note = self._checkpoint_in(tx, [old, new])
        self._keep_head(note)
        self.signer = new
        self._since_checkpoint = 0
        return seq, note

    def latest_note(self) -> str | None:
        with raw_transaction(self.db) as tx:
            row = tx.one(_LATEST, {})
        return str(row[1]) if row else None
