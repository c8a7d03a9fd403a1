"""The reporting deadlines of open incidents, as gauges an alert can fire on: one series per
incident whose report to the authority is due and not yet made (AI Act Art. 73).

A scrape reads the few pending incidents at most once per `ttl_s`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sovllm.governance import incidents
from sovllm.store.db import Database


class IncidentCollector(Collector):
    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[incidents.Incident]] | None = None

    def pending(self) -> list[incidents.Incident]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._ttl_s:
                self._cached = (now, incidents.pending_reports(self._db))
            return self._cached[1]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        due = GaugeMetricFamily(
            "sovllm:incident_report_deadline_timestamp_seconds",
            "When the report of an open incident is due to the authority (POSIX seconds); "
            "only incidents not yet reported or closed.",
            labels=["id", "class"],
        )
        counts = GaugeMetricFamily(
            "sovllm:incidents_pending_report",
            "Open incidents whose report to an authority is due and not yet made, by class.",
            labels=["class"],
        )
        pending = self.pending()
        for found in pending:
            assert found.deadline_at is not None  # pending_reports selects only these
            due.add_metric([found.id, found.severity], found.deadline_at)
        for name, severity in incidents.SEVERITIES.items():
            if severity.report_within_s is not None:  # a series per class, at zero when none
                counts.add_metric([name], sum(1 for i in pending if i.severity == name))
        yield due
        yield counts
