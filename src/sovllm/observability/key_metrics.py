"""`sovllm:key_age_seconds{key=signing|master|pseudonym}`: how long ago each key file was
written, so an alert can ask for a rotation after N days (docs/audit.md, "Keys and rotation").

A rotation writes a new file, so its age starts again at zero; a mounted secret's age is that
of the file the mount shows. A key file not made yet is left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sovllm.config import Settings
from sovllm.governance.audit import key_path, pseudonym_key_path
from sovllm.governance.privacy.content import master_key_path


def key_files(settings: Settings) -> dict[str, Path]:
    return {
        "signing": key_path(settings),
        "master": master_key_path(settings),
        "pseudonym": pseudonym_key_path(settings),
    }


class KeyAgeCollector(Collector):
    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "sovllm:key_age_seconds",
            "Seconds since the key file was written (a rotation writes a new one).",
            labels=["key"],
        )
        now = time.time()
        for name, path in self._files.items():
            try:
                written = path.stat().st_mtime
            except OSError:
                continue
            age.add_metric([name], max(0.0, now - written))
        yield age
