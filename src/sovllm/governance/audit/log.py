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
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import Checkpoint, Signer
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction

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
_INSERT_CHECKPOINT = SQL(
    "INSERT INTO audit_checkpoints (size, root, note, compact, at) "
    "VALUES (:size, :root, :note, :compact, :at)"
)


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


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
    ) -> None:
        self.db = db
        self.signer = signer
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
            self.checkpoint()

    def append(
        self, kind: str, fields: Mapping[str, Any], request_id: str | None = None
    ) -> concurrent.futures.Future[int]:
        """Queue an entry; the future gives its sequence number once it is committed."""
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        pending = _Pending(kind, request_id, dict(fields), time.time(), done)
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
                if self.db.backend == "postgresql":
                    tx.run(_LOCK, {})
                row = tx.one(_NEXT, {})
                seq = int(row[0]) if row else 0
                for item in batch:
                    body = {
                        "v": SCHEMA_VERSION, "seq": seq, "time": utc(item.at),
                        "kind": item.kind, "request_id": item.request_id, **item.fields,
                    }  # fmt: skip
                    data = canonical(body)
                    tx.run(_INSERT, {
                        "seq": seq, "at": item.at, "kind": item.kind, "rid": item.request_id,
                        "body": data.decode(), "leaf": merkle.leaf_hash(data).hex(),
                    })  # fmt: skip
                    item.fields["_seq"] = seq
                    seq += 1
        except Exception as exc:
            log.exception("audit append failed")
            for item in batch:
                item.done.set_exception(exc)
            return
        for item in batch:
            item.done.set_result(item.fields.pop("_seq"))
        self._since_checkpoint += len(batch)
        due = time.monotonic() - self._last_checkpoint_at >= self.checkpoint_seconds
        if self._since_checkpoint >= self.checkpoint_every or due:
            try:
                self.checkpoint()
            except Exception:
                log.exception("audit checkpoint failed")

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Sign the current tree head and store it (unless already signed); return the note.

        Starts from the last checkpoint's compact range, so it reads only the new leaves.
        """
        with raw_transaction(self.db) as tx:
            if self.db.backend == "postgresql":
                tx.run(_LOCK, {})
            latest = tx.one(_LATEST, {})
            start = int(latest[0]) if latest else 0
            compact: merkle.Compact = (
                [(int(n), bytes.fromhex(h)) for n, h in json.loads(latest[2])] if latest else []
            )
            new = [bytes.fromhex(r[0]) for r in tx.all(_LEAVES_FROM, {"start": start})]
            if latest is not None and not new:
                note = str(latest[1])
            else:
                merkle.extend(compact, new)
                size, root = start + len(new), merkle.compact_root(compact)
                note = self.signer.sign(Checkpoint(self.origin, size, root))
                tx.run(_INSERT_CHECKPOINT, {
                    "size": size, "root": root.hex(), "note": note, "at": time.time(),
                    "compact": json.dumps([[n, h.hex()] for n, h in compact]),
                })  # fmt: skip
        self._since_checkpoint = 0
        self._last_checkpoint_at = time.monotonic()
        return note

    def latest_note(self) -> str | None:
        with raw_transaction(self.db) as tx:
            row = tx.one(_LATEST, {})
        return str(row[1]) if row else None
