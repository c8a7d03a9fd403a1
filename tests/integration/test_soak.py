"""`sovllm bench --soak` for about a minute against a real `sovllm serve` with the embedded
model, on SQLite and on PostgreSQL: chat users beside an admin actor that reads, cycles keys,
and stops and resumes the service. The bench's own targets must all be met (its exit status
says so), `sovllm audit verify` agrees, and the HTML report plots what was sampled.

The 30-minute soak is the same command with the defaults (docs/reliability.md, "Soak")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, fresh_database_url, run_server

PLOTS = ("Server resident memory", "Server open files", "Database and WAL size", "Audit log")


def _sovllm(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **env},
    )  # fmt: skip


def _soak(server: Server, out: Path) -> subprocess.CompletedProcess[str]:
    args = [
        "bench", "--soak", "--url", server.base_url,
        "--users", "2", "--think-time", "0.3", "--turns", "2",
        # The template alone is 30 tokens and the machine is shared: keep the work small.
        "--prompt-tokens", "34-44", "--output-tokens", "6",
        "--warmup", "3", "--duration", "60", "--grace", "60",
        "--sample-every", "2", "--admin-every", "1", "--key-every", "8",
        "--stop-every", "12", "--stop-hold", "2",
        "--out", str(out), "--json",
    ]  # fmt: skip
    # The admin key through the environment, as an operator should pass it (not in `ps`).
    return _sovllm({"SOVLLM_ADMIN_KEY": server.api_key}, *args, timeout=400)


@pytest.mark.timeout(900)  # about 2 minutes alone, server start included; far more under load
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_one_minute_soak_meets_its_targets(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str] = {}
    if backend == "postgresql":
        env["SOVLLM_DATABASE_URL"] = fresh_database_url(
            backend, tmp_path, request.getfixturevalue("postgres_url")
        )
    with run_server(tmp_path / "srv", env) as server:
        result = _soak(server, tmp_path / "soak")
        assert result.returncode == 0, result.stderr[-3000:]
        doc: dict[str, Any] = json.loads(result.stdout)
        verify = _sovllm(server.env or {}, "audit", "verify", timeout=120)
    soak = doc["soak"]
    assert soak["met"] is True and all(t["met"] for t in soak["targets"]), soak["targets"]
    assert [t["name"].split(" (")[0] for t in soak["targets"]] == [
        "no 5xx",
        "memory flat after warm-up",
        "audit log verifies",
        "usage equals the request.end token counts",
    ]
    # The operator really worked: stops of each kind, keys made, used, revoked and refused.
    assert len(soak["stops"]) >= 3
    assert {(s["scope"], s["mode"]) for s in soak["stops"][:3]} == {
        ("tenant", "cut"),
        ("all", "drain"),
        ("model", "cut"),
    }
    assert all(s["end_s"] is not None for s in soak["stops"])
    assert soak["key_cycles"] >= 1
    assert soak["admin_failures_count"] == 0, soak["admin_failures"]
    assert not any(k.startswith(("5xx", "error")) for k in soak["outcomes"]), soak["outcomes"]
    assert soak["outcomes"].get("ok", 0) >= 3
    usage = soak["usage"]
    assert usage["usage_tokens"] == usage["log_tokens"] > 0
    assert usage["begun"] == usage["ended"] >= soak["outcomes"]["ok"]
    # Sampled over the whole run, from the server's /metrics.
    series = soak["series"]
    for name in ("rss_bytes", "open_fds", "db_bytes", "wal_bytes", "audit_entries"):
        assert len(series[name]) >= 20, (name, len(series[name]))
    assert series["rss_bytes"][0][1] > 50e6
    assert series["audit_entries"][-1][1] > series["audit_entries"][0][1]
    assert soak["verify"]["ok"] is True
    # `sovllm audit verify` on the server's own data agrees with the API's verification.
    assert verify.returncode == 0, verify.stdout + verify.stderr

    page = (tmp_path / "soak.html").read_text()
    section = page[page.index("<h2>Soak</h2>") :]
    for title in PLOTS:
        figure = section[section.index(title) :]
        figure = figure[: figure.index("</figure>")]
        # A line with data in it, not the chart's "no data".
        assert "no data" not in figure and re.search(r'<polyline points="[^"]+ ', figure), title
