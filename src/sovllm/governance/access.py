"""Access logging (ISO/IEC 27001 A.8.15, GDPR Art. 32): who read what, and who was turned away.

Reads of personal or security data are `access.read` entries with their actor
(`records.access_read`).
Refusals (401, 403) are counted in memory per minute, presented key prefix, source address and
status, and one `access.denied` entry per group is written when its minute closes (and at
shutdown), so a flood of bad keys costs the log a bounded number of entries, not one per request.
A source with too many failures in the last 60 s is refused (429) before its key is looked at;
those refusals are one group per minute and source whatever keys they carry.

The counts live in one gateway's memory: each gateway of a deployment applies the limit to what
it sees. Everything here runs on the event loop; the lock only guards against a future caller
from a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sovllm.governance.audit import records
from sovllm.governance.audit.records import DENIED
from sovllm.governance.identity import KEY_PREFIX
from sovllm.store.raw import SQL, raw_transaction

if TYPE_CHECKING:  # the command line imports this module; it loads the log only when it writes
    from sovllm.governance.audit.log import AuditLog
    from sovllm.store.db import Database

VISIBLE = len(KEY_PREFIX) + 4  # what key listings show: "sk-sovllm-" and 4 characters
MAX_GROUPS = 10_000  # per minute; past this, failures from new sources share one group
MAX_PATHS = 5
THROTTLED = "*"  # the key prefix of the 429 groups: no key was looked at


def presented_prefix(raw: str | None) -> str:
    """The first characters of a presented key, never the whole of it; "none" when no key.

    At most the prefix a key listing shows, and at most a third of what was sent, so a short
    secret pasted by mistake (a password) is not written down.
    """
    if not raw:
        return "none"
    shown = raw[: min(VISIBLE, len(raw) // 3)]
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in shown)


@dataclass
class _Group:
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)


def _minute_iso(minute: float) -> str:
    return dt.datetime.fromtimestamp(minute, dt.UTC).isoformat()


class AccessGuard:
    """Failed authentications: the per-source limit and the per-minute groups for the log."""

    def __init__(
        self,
        failures_per_minute: int,
        clock: Callable[[], float] = time.time,
        window_s: float = 60.0,
    ) -> None:
        self.limit = failures_per_minute
        self.window_s = window_s  # a minute; tests of the flush loop shorten it
        self._clock = clock
        self._lock = threading.Lock()
        # Only the last `limit` failure times per source matter for "limit within a window".
        self._failures: dict[str, deque[float]] = {}
        self._groups: dict[tuple[float, str, str, int], _Group] = {}

    def retry_after(self, source: str) -> int | None:
        """Whole seconds until `source` may try again, or None when it is not throttled."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(source)
            if times is None or len(times) < self.limit:
                return None
            wait = times[0] + self.window_s - now
        return math.ceil(wait) if wait > 0 else None

    def denied(self, source: str, prefix: str, status: int, reason: str, path: str) -> None:
        """Count one refusal; 401 and 403 also count towards the source's limit."""
        now = self._clock()
        minute = math.floor(now / self.window_s) * self.window_s
        with self._lock:
            if status != 429:
                self._failures.setdefault(source, deque(maxlen=self.limit)).append(now)
            key = (minute, THROTTLED if status == 429 else prefix, source, status)
            if key not in self._groups and len(self._groups) >= MAX_GROUPS:
                key = (minute, THROTTLED, "*", status)  # a flood from many sources: one group
            group = self._groups.setdefault(key, _Group())
            group.count += 1
            group.reasons[reason] = group.reasons.get(reason, 0) + 1
            if path not in group.paths and len(group.paths) < MAX_PATHS:
                group.paths.append(path[:200])

    def closed(self, everything: bool = False) -> list[dict[str, object]]:
        """The groups of minutes that have ended (all, at shutdown) as entries; they are
        forgotten here, as are sources with no failure in the last window."""
        now = self._clock()
        current = math.floor(now / self.window_s) * self.window_s
        with self._lock:
            done = sorted(k for k in self._groups if everything or k[0] < current)
            out = [self._fields(k, self._groups.pop(k)) for k in done]
            for source in [s for s, t in self._failures.items() if t[-1] <= now - self.window_s]:
                del self._failures[source]
        return out

    def pending(self) -> list[dict[str, object]]:
        """The groups not yet written (the minute still open), newest first."""
        with self._lock:
            items = sorted(self._groups.items(), key=lambda kv: kv[0], reverse=True)
            return [{**self._fields(k, g), "pending": True} for k, g in items]

    @staticmethod
    def _fields(key: tuple[float, str, str, int], group: _Group) -> dict[str, object]:
        minute, prefix, source, status = key
        return records.access_denied(
            _minute_iso(minute), source, prefix, status, group.count, group.reasons, group.paths
        )

    def flush(self, audit: AuditLog, everything: bool = False) -> int:
        """Queue one `access.denied` entry per closed group; returns how many."""
        groups = self.closed(everything)
        for fields in groups:
            audit.append(DENIED, fields)
        return len(groups)

    async def run(self, audit: AuditLog) -> None:
        """Write each minute's groups just after it closes, until cancelled."""
        while True:
            now = self._clock()
            await asyncio.sleep(self.window_s - now % self.window_s + 0.05 * self.window_s / 60)
            self.flush(audit)


def logged_denials(db: Database, limit: int) -> list[dict[str, object]]:
    """The newest `access.denied` entries in the log, newest first."""
    sql = SQL(
        # Entries pruned past retention have no body left to show.
        "SELECT seq, body FROM audit_entries WHERE kind = :kind AND body IS NOT NULL "
        f"ORDER BY seq DESC LIMIT {int(limit)}"
    )
    with raw_transaction(db) as tx:
        rows = tx.all(sql, {"kind": DENIED})
    out: list[dict[str, object]] = []
    for seq, body in rows:
        entry: dict[str, Any] = json.loads(body)
        shown = ("minute", "source", "key_prefix", "status", "count", "reasons", "paths")
        fields = {k: entry.get(k) for k in shown}
        out.append({**fields, "seq": int(seq), "pending": False})
    return out
