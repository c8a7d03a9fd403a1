"""The audit log's health for alerts and the dashboard: its size, how long an entry has waited
for a signed checkpoint, and the result of the last verification.

Cheap by construction: a scrape reads at most four rows, each through an index (the entries'
and checkpoints' primary keys, the entries' `kind` index), never the table; and it reads them
at most once per `ttl_s`, so Prometheus servers scraping together cost one read.

The verification reported is the newest `audit.verify` entry in the log (the console's "verify
now", POST /admin/v1/audit/verify): it is the same for every gateway on the database and
survives a restart, which a result kept in this process would not.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from sovllm.governance.audit import records
from sovllm.governance.audit.log import instant
from sovllm.store.db import Database

_SIZE = text("SELECT max(seq) FROM audit_entries")
_SIGNED = text("SELECT size FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
_AT = text("SELECT at FROM audit_entries WHERE seq = :seq")
_VERIFY = text(
    "SELECT body FROM audit_entries WHERE kind = :kind AND body IS NOT NULL "
    "ORDER BY seq DESC LIMIT 1"
)


@dataclass(frozen=True)
class AuditHealth:
    entries: int
    signed: int
    """Entries the newest checkpoint covers."""
    oldest_unsigned_at: float | None
    """When the first entry no checkpoint covers was written (None: all are covered)."""
    verify_ok: bool | None
    verify_at: float | None


def read_health(db: Database) -> AuditHealth:
    """A plain read (no write lock, unlike the log's own transactions): a scrape never holds
    up the audit writer."""
    with db.engine.connect() as conn:
        entries = conn.execute(_SIZE).scalar()
        count = int(entries) + 1 if entries is not None else 0
        signed = int(conn.execute(_SIGNED).scalar() or 0)
        first = conn.execute(_AT, {"seq": signed}).scalar() if signed < count else None
        verify = conn.execute(_VERIFY, {"kind": records.VERIFY}).scalar()
    entry = json.loads(verify) if verify else {}
    result = entry.get("result")
    ok = bool(result.get("ok")) if isinstance(result, dict) else None
    at = instant(str(entry["time"])) if ok is not None and "time" in entry else None
    return AuditHealth(count, signed, float(first) if first is not None else None, ok, at)


class AuditCollector(Collector):
    def __init__(
        self, db: Database, ttl_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, AuditHealth] | None = None

    def health(self) -> AuditHealth:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._ttl_s:
                self._cached = (now, read_health(self._db))
            return self._cached[1]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        h = self.health()
        yield GaugeMetricFamily(
            "sovllm:audit_entries", "Entries in the audit log (pruned bodies included).", h.entries
        )
        yield GaugeMetricFamily(
            "sovllm:audit_checkpoint_entries",
            "Entries covered by the newest signed checkpoint.",
            h.signed,
        )
        waited = 0.0 if h.oldest_unsigned_at is None else self._clock() - h.oldest_unsigned_at
        yield GaugeMetricFamily(
            "sovllm:audit_unsigned_age_seconds",
            "How long the oldest entry no checkpoint covers has waited (0: all are signed).",
            max(0.0, waited),
        )
        if h.verify_ok is None or h.verify_at is None:
            return  # never verified: no series, so no alert either way
        yield GaugeMetricFamily(
            "sovllm:audit_last_verify_ok",
            "1 if the newest audit.verify entry found the log intact, 0 if it found a problem.",
            1.0 if h.verify_ok else 0.0,
        )
        yield GaugeMetricFamily(
            "sovllm:audit_last_verify_timestamp_seconds",
            "When the newest audit.verify entry was written (POSIX seconds).",
            h.verify_at,
        )
