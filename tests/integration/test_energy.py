"""Energy per request on the real server and model, with the RAPL reader pointed at a counter
the test writes and advances while requests run: the joules reach the usage table, the
`request.end` audit entry, /metrics, the admin API and `sovllm usage --energy`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from sovllm.cli.main import app
from sovllm.engines.llamacpp.calibrate import RateSample
from sovllm.planner.profile import build_profile, profile_path, save_profile
from tests.conftest import MODEL_ID, Server, free_port, run_server, wait_until

pytestmark = pytest.mark.slow
GRID = 0.4  # kg CO2e per kWh
RANGE_UJ = 262_143_328_850


class Counter:
    """One RAPL package zone whose energy_uj the test advances (written atomically: the
    server may read it at any moment)."""

    def __init__(self, root: Path) -> None:
        self.zone = root / "intel-rapl:0"
        self.zone.mkdir(parents=True)
        (self.zone / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
        self.uj = RANGE_UJ - 2_000_000  # 2 J below the top: the first requests wrap it
        self.lock = threading.Lock()
        self._write()

    def _write(self) -> None:
        tmp = self.zone / "energy_uj.tmp"
        tmp.write_text(f"{self.uj}\n")
        os.replace(tmp, self.zone / "energy_uj")

    def advance(self, uj: int) -> None:
        with self.lock:
            self.uj = (self.uj + uj) % (RANGE_UJ + 1)
            self._write()

    @contextmanager
    def running(self, uj_per_tick: int = 20_000) -> Iterator[list[int]]:
        """Advance the counter every millisecond (a package drawing about 20 W) until the
        block ends; yields [microjoules advanced]."""
        advanced = [0]
        stop = threading.Event()

        def pump() -> None:
            while not stop.wait(0.001):
                self.advance(uj_per_tick)
                advanced[0] += uj_per_tick

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        try:
            yield advanced
        finally:
            stop.set()
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Counter]]:
    tmp = tmp_path_factory.mktemp("energy")
    counter = Counter(tmp / "powercap")
    env = {
        "SOVLLM_ENERGY__SOURCE": "rapl",
        "SOVLLM_ENERGY__RAPL_ROOT": str(tmp / "powercap"),
        "SOVLLM_ENERGY__GRID_KG_PER_KWH": str(GRID),
    }
    with run_server(tmp, env) as srv:
        yield srv, counter


def end_entry(server: Server, request_id: str) -> dict[str, Any]:
    """The request's `request.end` body, once the log has written it (the last chunk can
    reach the client before the entry is durable)."""

    def rows() -> list[tuple[str]]:
        with sqlite3.connect(server.data_dir / "sovllm.db") as conn:
            return conn.execute(
                "SELECT body FROM audit_entries WHERE request_id = ? AND kind = 'request.end'",
                (request_id,),
            ).fetchall()

    wait_until(lambda: rows(), f"the request.end entry of {request_id}", timeout=30)
    [(body,)] = rows()
    out: dict[str, Any] = json.loads(body)
    return out


def metric_lines(server: Server, tenant: str) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=10).text
    prefix = "sovllm:energy_joules_total{"
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix) and f'tenant="{tenant}"' in line:
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


def chat(server: Server, key: str, max_tokens: int) -> str:
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Count from one to fifty in words."}],
        max_tokens=max_tokens,
        stream=True,
    )
    request_id = ""
    for chunk in stream:
        request_id = chunk.id
    return request_id


def test_a_request_carries_the_joules_of_its_engine_steps(
    metered: tuple[Server, Counter],
) -> None:
    server, counter = metered
    key = server.create_key("energy-a")
    with counter.running() as advanced:
        first = chat(server, key, 24)
    assert advanced[0] > 0
    entry = end_entry(server, first)["energy"]
    # Only what the counter advanced during the request's engine steps is its: some, not all
    # (the gaps between steps and the time before admission are nobody's).
    assert entry["source"] == "measured:rapl"
    assert 0 < entry["joules"] <= advanced[0] / 1e6
    assert entry["co2e_g"] == pytest.approx(entry["joules"] / 3.6e6 * GRID * 1000, abs=1e-8)

    # The counter stands still: a request gets exactly nothing, not a guess.
    still = chat(server, key, 8)
    assert end_entry(server, still)["energy"] == {
        "joules": 0.0,
        "source": "measured:rapl",
        "co2e_g": 0.0,
    }

    series = metric_lines(server, "energy-a")
    line = (
        f'sovllm:energy_joules_total{{model="{MODEL_ID}",source="measured:rapl",tenant="energy-a"}}'
    )
    assert series.keys() == {line}
    assert series[line] == pytest.approx(entry["joules"], rel=1e-6)

    r = server.admin("GET", "/usage/energy", params={"tenant": "energy-a"})
    assert r.status_code == 200, r.text
    [day] = r.json()["data"]
    assert (day["tenant"], day["requests"], day["source"]) == ("energy-a", 2, "measured:rapl")
    assert day["joules"] == pytest.approx(entry["joules"], rel=1e-6)
    assert day["kwh"] == pytest.approx(entry["joules"] / 3.6e6, rel=1e-6)
    assert day["co2e_g"] == pytest.approx(entry["co2e_g"], rel=1e-4)

    done = subprocess.run(
        [sys.executable, "-m", "sovllm", "usage", "--energy", "--json", "--tenant", "energy-a"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(server.env or {})},
    )
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["joules"] == pytest.approx(entry["joules"], rel=1e-6)
    assert (row["requests"], row["source"]) == (2, "measured:rapl")
    table = subprocess.run(
        [sys.executable, "-m", "sovllm", "usage", "--energy", "--tenant", "energy-a"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(server.env or {}), "COLUMNS": "160"},  # a table, not cut
    )
    assert table.returncode == 0, table.stderr
    assert "energy-a" in table.stdout and "measured:rapl" in table.stdout


def test_tenants_are_counted_apart(metered: tuple[Server, Counter]) -> None:
    server, counter = metered
    key = server.create_key("energy-b")
    with counter.running():
        request_id = chat(server, key, 16)
    joules = end_entry(server, request_id)["energy"]["joules"]
    assert joules > 0
    assert sum(metric_lines(server, "energy-b").values()) == pytest.approx(joules, rel=1e-6)
    assert all(v != joules for v in metric_lines(server, "energy-a").values())


def test_a_rapl_root_without_zones_stops_the_start(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SOVLLM_DATA_DIR": str(tmp_path / "data"),
        "SOVLLM_ENERGY__SOURCE": "rapl",
        "SOVLLM_ENERGY__RAPL_ROOT": str(tmp_path / "nothing"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode != 0
    assert "invalid setting 'energy.source' (rapl): no intel-rapl package zones under" in (
        done.stderr + done.stdout
    )
    assert "Traceback" not in done.stderr


def test_bench_reports_joules_per_output_token_beside_the_plan(
    metered: tuple[Server, Counter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, counter = metered
    # A cpu-local profile (rates of the order `plan calibrate` measures here; 10 W a core), so
    # --compare-plan answers with numbers.
    data = tmp_path / "data"
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(data))
    rates = [RateSample(b, 300.0, 80.0 + 10 * b) for b in (1, 2, 4)]
    save_profile(build_profile(rates, MODEL_ID, threads=1), profile_path(data))
    args = ["bench", "--url", server.base_url, "--api-key", server.api_key, "--users", "1"]
    args += ["--think-time", "0.1", "--prompt-tokens", "40", "--output-tokens", "6"]
    args += ["--warmup", "0", "--duration", "5", "--grace", "30", "--compare-plan", "--json"]
    with counter.running():
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output[result.output.index("{") :])
    energy = doc["summary"]["energy"]
    assert energy["sources"] == ["measured:rapl"]
    assert energy["joules"] > 0 and energy["output_tokens"] >= 6
    assert energy["joules_per_output_token"] == pytest.approx(
        energy["joules"] / energy["output_tokens"]
    )
    by_metric = {row["metric"]: row for row in doc["compare_plan"]["rows"]}
    row = by_metric["joules/output token"]
    assert row["measured"] == energy["joules_per_output_token"]
    assert row["predicted"] > 0


def test_a_worker_replicas_requests_share_the_joules_in_flight(tmp_path: Path) -> None:
    """A worker's steps are out of the gateway's sight: the counter's delta over the requests'
    lives is shared among those in flight by their tokens."""
    counter = Counter(tmp_path / "powercap")
    env = {"SOVLLM_ENERGY__SOURCE": "rapl", "SOVLLM_ENERGY__RAPL_ROOT": str(tmp_path / "powercap")}
    with run_server(tmp_path / "srv", env, args=("--replicas", "1")) as server:
        key = server.create_key("energy-w")
        with counter.running() as advanced:
            request_id = chat(server, key, 16)
        entry = end_entry(server, request_id)["energy"]
        assert entry["source"] == "measured:rapl" and entry["co2e_g"] is None
        # Alone in flight, it gets what the counter advanced from its first output to its end.
        assert 0 < entry["joules"] <= advanced[0] / 1e6
        still = chat(server, key, 4)
        assert end_entry(server, still)["energy"]["joules"] == 0.0
        assert sum(metric_lines(server, "energy-w").values()) == pytest.approx(
            entry["joules"], rel=1e-6
        )
