"""Energy counters: each reads joules since it was made, monotonic, wrap-arounds unwound.

`RaplCounter` sums the Intel RAPL package zones, `NvmlCounter` the local GPUs' NVML totals,
`DcgmCounter` a DCGM exporter's totals (scraped in a thread of its own, so a read never waits
on the network), `EstimatedCounter` integrates an estimated power. Each `source` says which
(`measured:rapl|nvml|dcgm` or `estimated`); an estimate is never labelled measured.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Protocol

import httpx

from sovllm.observability.energy.split import counter_delta

log = logging.getLogger("sovllm.energy")

# Packages only: a package's core and uncore subzones are part of its total, so summing every
# zone would count them twice.
_PACKAGE = re.compile(r"intel-rapl:\d+$")
DCGM_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"


class EnergyUnavailable(Exception):
    """The counter a setting names cannot be read here; the message says why."""


class EnergyCounter(Protocol):
    source: str

    def read(self) -> float:
        """Joules since the counter was made (monotonic)."""
        ...

    def close(self) -> None: ...


class _Unwound:
    """A raw counter made monotonic: each reading's delta is added, a wrap unwound."""

    def __init__(self, first: float, max_range: float | None) -> None:
        self._last, self._range, self.total = first, max_range, 0.0

    def advance(self, raw: float) -> float:
        self.total += counter_delta(self._last, raw, self._range)
        self._last = raw
        return self.total


class RaplCounter:
    """The energy_uj files of the intel-rapl package zones under `root` (microjoules, each
    wrapping at its max_energy_range_uj)."""

    source = "measured:rapl"

    def __init__(self, root: Path) -> None:
        zones = sorted(p for p in root.glob("intel-rapl:*") if _PACKAGE.fullmatch(p.name))
        if not zones:
            raise EnergyUnavailable(f"no intel-rapl package zones under {root}")
        self._files = [z / "energy_uj" for z in zones]
        self._zones: list[_Unwound] = []
        for zone, path in zip(zones, self._files, strict=True):
            max_range = _read_number(zone / "max_energy_range_uj")
            self._zones.append(_Unwound(_read_number(path), max_range))

    def read(self) -> float:
        return (
            sum(z.advance(_read_number(p)) for z, p in zip(self._zones, self._files, strict=True))
            / 1e6
        )

    def close(self) -> None:
        pass


def _read_number(path: Path) -> float:
    try:
        return float(path.read_text().strip())
    except PermissionError:
        raise EnergyUnavailable(
            f"{path} is not readable by this user (root-only on current kernels; "
            "docs/observability.md, 'Energy', says how to grant access and what it costs)"
        ) from None
    except (OSError, ValueError) as exc:
        raise EnergyUnavailable(f"cannot read {path}: {exc}") from None


class NvmlCounter:
    """nvmlDeviceGetTotalEnergyConsumption (millijoules since the driver loaded) of every local
    GPU, summed. nvidia-ml-py is imported here only: sovllm does not depend on it."""

    source = "measured:nvml"

    def __init__(self) -> None:
        try:
            import pynvml  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise EnergyUnavailable(
                "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            ) from None
        try:
            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
            if not self._handles:
                raise EnergyUnavailable("NVML sees no GPU")
            self._total = _Unwound(self._raw(), None)
        except pynvml.NVMLError as exc:
            raise EnergyUnavailable(f"NVML: {exc}") from None

    def _raw(self) -> float:
        get = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        return sum(float(get(h)) for h in self._handles) / 1e3

    def read(self) -> float:
        return self._total.advance(self._raw())

    def close(self) -> None:
        self._nvml.nvmlShutdown()


def parse_dcgm(text: str) -> float | None:
    """The sum of every GPU's DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ) in Prometheus text, in
    joules; None when the exporter does not report it."""
    values = [
        float(line.rsplit(None, 1)[-1])
        for line in text.splitlines()
        if line.startswith(DCGM_METRIC) and line[len(DCGM_METRIC) : len(DCGM_METRIC) + 1] in "{ "
    ]
    return sum(values) / 1e3 if values else None


class DcgmCounter:
    """A DCGM exporter's energy totals, scraped every `poll_s` in a thread of its own; a read
    returns the last scrape. The URL's egress is checked where the service starts."""

    source = "measured:dcgm"

    def __init__(self, url: str, poll_s: float) -> None:
        self._url, self._poll_s = url, poll_s
        self._client = httpx.Client(timeout=max(1.0, poll_s))
        first = self._scrape()
        if first is None:
            self._client.close()
            raise EnergyUnavailable(f"{url} does not report {DCGM_METRIC}")
        self._total = _Unwound(first, None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="sovllm-dcgm", daemon=True)
        self._thread.start()

    def _scrape(self) -> float | None:
        try:
            r = self._client.get(self._url)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            raise EnergyUnavailable(f"cannot scrape {self._url}: {exc}") from None
        return parse_dcgm(r.text)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                value = self._scrape()
            except EnergyUnavailable as exc:
                log.warning("%s", exc)
                continue
            if value is not None:
                with self._lock:
                    self._total.advance(value)

    def read(self) -> float:
        with self._lock:
            return self._total.total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()


class EstimatedCounter:
    """Integrates idle + (TDP - idle) * busy fraction over time, for `devices` devices.

    On a CPU the busy fraction is measured: this process's CPU time over the wall time of all
    cores. A GPU's is taken as 1 between readings (the meter reads around engine steps, or
    while requests are in flight). Always labelled `estimated`.
    """

    source = "estimated"

    def __init__(self, tdp_w: float, kind: str, devices: int, idle_fraction: float) -> None:
        self._tdp, self._idle = tdp_w * devices, tdp_w * devices * idle_fraction
        self._cpu = kind == "cpu"
        self._cores = os.cpu_count() or 1
        self._wall, self._busy = time.perf_counter(), time.process_time()
        self._total = 0.0

    def read(self) -> float:
        wall, busy = time.perf_counter(), time.process_time()
        dt = wall - self._wall
        if dt > 0:
            frac = (
                min(1.0, max(0.0, (busy - self._busy) / (dt * self._cores))) if self._cpu else 1.0
            )
            self._total += (self._idle + (self._tdp - self._idle) * frac) * dt
        self._wall, self._busy = wall, busy
        return self._total

    def close(self) -> None:
        pass
