"""Clock evidence (ISO/IEC 27001 A.8.17): whether the system clock is synchronised, and its
estimated error, in the audit log at start-up and every hour, and as gauges.

The audit log's times are only as good as this clock. The kernel knows whether a time daemon
(chrony, ntpd, systemd-timesyncd) keeps it synchronised: `adjtimex(2)` answers TIME_ERROR,
or sets STA_UNSYNC, when nobody does. It is read through ctypes: no privilege, no daemon, and
it works in a container, where `timedatectl` has no systemd to ask. `timedatectl` is the
fallback where libc has no `adjtimex` (not Linux).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sovllm.governance.audit import operations, records
from sovllm.governance.audit.log import AuditLog

log = logging.getLogger("sovllm.clock")
EVERY_S = 3600.0
TIME_ERROR = 5
STA_UNSYNC = 0x0040
STA_NANO = 0x2000


class _Timex(ctypes.Structure):
    """struct timex (linux/timex.h), for the fields read here; the rest is padding."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("rest", ctypes.c_long * 20),
    ]


@dataclass(frozen=True)
class ClockReading:
    source: str
    """adjtimex, timedatectl or none."""
    synchronized: bool | None
    """None: the state could not be read."""
    offset_s: float | None
    """The time daemon's last measured offset from its reference (adjtimex only)."""
    max_error_s: float | None
    """The kernel's bound on the clock's error."""
    detail: str
    at: float

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "synchronized": self.synchronized,
            "offset_s": self.offset_s,
            "max_error_s": self.max_error_s,
            "detail": self.detail,
            "checked_at": self.at,
        }


def interpret(state: int, status: int, offset: int, maxerror: int) -> ClockReading:
    """adjtimex's answer: its return value (the clock state), `status` bits, `offset` (µs, or ns
    with STA_NANO) and `maxerror` (µs)."""
    synced = state != TIME_ERROR and not status & STA_UNSYNC
    scale = 1e-9 if status & STA_NANO else 1e-6
    why = "synchronised" if synced else "not synchronised (no time daemon disciplines it)"
    return ClockReading(
        "adjtimex",
        synced,
        offset * scale,
        maxerror * 1e-6,
        f"kernel clock state {state}, status {status:#x}: {why}",
        time.time(),
    )


def _adjtimex() -> ClockReading | None:
    name = ctypes.util.find_library("c")
    try:
        call = ctypes.CDLL(name, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    tx = _Timex()
    state = call(ctypes.byref(tx))
    if state < 0:
        return ClockReading(
            "adjtimex", None, None, None, f"errno {ctypes.get_errno()}", time.time()
        )
    return interpret(state, tx.status, tx.offset, tx.maxerror)


def _timedatectl() -> ClockReading:
    try:
        done = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ClockReading("none", None, None, None, f"timedatectl: {exc}", time.time())
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in ("yes", "no"):
        why = (done.stderr.strip() or answer or f"exit {done.returncode}").splitlines()[0]
        return ClockReading("none", None, None, None, f"timedatectl: {why}", time.time())
    return ClockReading(
        "timedatectl", answer == "yes", None, None, f"NTPSynchronized={answer}", time.time()
    )


def read_clock() -> ClockReading:
    return _adjtimex() or _timedatectl()


class ClockWatch:
    """The latest reading, written to the audit log at each check."""

    def __init__(self, audit: AuditLog, read: Callable[[], ClockReading] = read_clock) -> None:
        self._audit = audit
        self._read = read
        self.latest: ClockReading | None = None

    async def check(self, trigger: str) -> ClockReading:
        """Read the clock and record it; durable when this returns."""
        reading = self._read()
        self.latest = reading
        if not reading.synchronized:
            log.warning("the system clock is not known to be synchronised: %s", reading.detail)
        fields = operations.clock_sync(
            trigger,
            reading.source,
            reading.synchronized,
            reading.offset_s,
            reading.max_error_s,
            reading.detail,
        )
        await asyncio.wrap_future(self._audit.append(records.CLOCK, fields))
        return reading

    async def run(self, every_s: float = EVERY_S) -> None:
        """The hourly checks after the start-up one."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.check("hourly")
            except Exception:
                log.exception("recording the clock's state failed")


class ClockCollector(Collector):
    def __init__(self, watch: ClockWatch) -> None:
        self._watch = watch

    def collect(self) -> Iterator[GaugeMetricFamily]:
        r = self._watch.latest
        if r is None:
            return  # not read yet
        # Unknown counts as not synchronised: nothing vouches for the log's times then either.
        yield GaugeMetricFamily(
            "sovllm:clock_synchronized",
            "1 if the kernel says a time daemon keeps the clock synchronised; 0 if not, or unknown.",
            1.0 if r.synchronized else 0.0,
        )
        if r.offset_s is not None:
            yield GaugeMetricFamily(
                "sovllm:clock_offset_seconds",
                "The time daemon's last measured offset of the clock (adjtimex).",
                r.offset_s,
            )
        if r.max_error_s is not None:
            yield GaugeMetricFamily(
                "sovllm:clock_max_error_seconds",
                "The kernel's bound on the clock's error (adjtimex maxerror).",
                r.max_error_s,
            )
