"""The stop switch and the data volume, as gauges an alert can fire on.

Both are cheap: the stops are this gateway's copy (governance/oversight.py refreshes it a few
times a second), the volume one `statvfs` call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sovllm.governance.oversight import Oversight

SCOPES = ("all", "model", "tenant")


class StopsCollector(Collector):
    def __init__(self, oversight: Oversight) -> None:
        self._oversight = oversight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "sovllm:stops_active",
            "Stops in force, by scope (all, model, tenant).",
            labels=["scope"],
        )
        stops = list(self._oversight.stops)
        for scope in SCOPES:  # every scope has a series, at zero when nothing is stopped
            active.add_metric([scope], sum(1 for s in stops if s.scope == scope))
        yield active


class DataVolumeCollector(Collector):
    """Free and total bytes of the filesystem that holds data_dir (the database, when it is
    SQLite, the audit keys and the kept content)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            fs = os.statvfs(self._data_dir)
        except OSError:
            return  # not there (yet): no series rather than a wrong one
        yield GaugeMetricFamily(
            "sovllm:data_volume_free_bytes",
            "Bytes an unprivileged writer may still use on data_dir's filesystem.",
            fs.f_bavail * fs.f_frsize,
        )
        yield GaugeMetricFamily(
            "sovllm:data_volume_size_bytes",
            "Size of data_dir's filesystem in bytes.",
            fs.f_blocks * fs.f_frsize,
        )
