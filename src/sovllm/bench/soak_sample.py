"""What a soak watches on the server, sampled over time from its /metrics: resident memory and
open files (prometheus_client's process collector), the database's and WAL's bytes, and the
audit log's entries. With `--server-pid`, memory and open files come from /proc instead (for a
server whose /metrics lacks them, e.g. another implementation on this machine)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

# The series read from /metrics, by the name the soak gives them.
SERIES = {
    "rss_bytes": "process_resident_memory_bytes",
    "open_fds": "process_open_fds",
    "db_bytes": "sovllm:database_size_bytes",
    "wal_bytes": "sovllm:database_wal_bytes",
    "audit_entries": "sovllm:audit_entries",
}


@dataclass
class Sample:
    t_s: float
    """Seconds since the run started (warmup included)."""
    values: dict[str, float]


def parse_metrics(text: str) -> dict[str, float]:
    """The SERIES found in a Prometheus text exposition (unlabelled gauges; a labelled one is
    summed over its labels)."""
    wanted = {metric: name for name, metric in SERIES.items()}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        name = wanted.get(metric)
        if name is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def proc_values(pid: int) -> dict[str, float]:
    """RSS and open files of a local process from /proc; empty when it is gone."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_bytes"] = float(line.split()[1]) * 1024
        out["open_fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
    except OSError:
        return {}
    return out


async def scrape(http: httpx.AsyncClient, metrics_url: str, pid: int | None) -> dict[str, float]:
    values: dict[str, float] = {}
    try:
        r = await http.get(metrics_url)
        if r.status_code == 200:
            values = parse_metrics(r.text)
    except httpx.HTTPError:
        pass  # a missed sample is a gap in the plot, not a failed soak
    if pid is not None:
        values |= proc_values(pid)
    return values
