"""`sovllm bench --soak`'s pieces that need no server: its flags, how a request's outcome is
judged against the soak's own stops, the memory target, and reading /metrics and /proc.
The soak itself runs against a real server in tests/integration/test_soak.py."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from sovllm.bench.record import RequestRecord
from sovllm.bench.soak import StopWindow
from sovllm.bench.soak_check import outcome, rss_growth
from sovllm.bench.soak_sample import parse_metrics, proc_values
from sovllm.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["--rate", "2"], "--soak", "give --users"),
        (["--sweep"], "--soak", "cannot be combined with --sweep"),
        (["--stop-every", "0"], "--soak", "--stop-every must be above 0"),
        (["--stop-hold", "nan"], "--soak", "--stop-hold must be above 0"),
        ([], "--admin-key", "needs an admin key"),
    ],
)
def test_soak_flags_that_cannot_work_are_usage_errors(
    args: list[str], flag: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOVLLM_API_KEY", raising=False)
    monkeypatch.delenv("SOVLLM_ADMIN_KEY", raising=False)
    result = runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9/v1", "--soak", *args])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert flag in flat and words in flat, flat


def test_an_unreachable_server_is_a_clear_failure_before_any_load() -> None:
    result = runner.invoke(
        app, ["bench", "--url", "http://127.0.0.1:9/v1", "--soak", "--admin-key", "k"]
    )
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9/admin/v1" in result.output


def _record(status: str, http: int | None, sent: float, end: float, **kw: object) -> RequestRecord:
    r = RequestRecord(id=0, scheduled=sent, output_tokens_target=4, sent=sent, end=end)
    r.status = status  # type: ignore[assignment]
    r.http_status = http
    for k, v in kw.items():
        setattr(r, k, v)
    return r


STOPS = [StopWindow("tenant", "cut", start=100.0, end=105.0)]
STOPPED = "An administrator has stopped tenant 'soak-1' since 2026-12-03 17:00 UTC: soak."


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (_record("ok", 200, 10, 12), "ok"),
        (
            _record("error", 503, 102, 102.1, error_type="HTTP 503", error=STOPPED),
            "refused by a stop (503 service_stopped)",
        ),
        # Just after the resume, another gateway may not have applied it yet.
        (
            _record("error", 503, 106, 106.1, error_type="HTTP 503", error=STOPPED),
            "refused by a stop (503 service_stopped)",
        ),
        # A stop long over explains nothing; nor does a 503 that is not a stop's.
        (_record("error", 503, 150, 150.1, error_type="HTTP 503", error=STOPPED), "5xx: HTTP 503"),
        (
            _record("error", 503, 102, 102.1, error_type="HTTP 503", error="engine unavailable"),
            "5xx: HTTP 503",
        ),
        (_record("error", 500, 102, 102.1, error_type="HTTP 500", error="boom"), "5xx: HTTP 500"),
        # A stream in flight when the stop came, ended by it.
        (
            _record("error", 200, 90, 101, error_type="incomplete stream"),
            "cut by a stop (incomplete stream)",
        ),
        (_record("error", 200, 10, 12, error_type="connection closed"), "error: connection closed"),
        # A slow request that happens to span a stop is slow, not stopped.
        (_record("error", 200, 90, 390, error_type="timeout"), "error: timeout"),
        (
            _record("incomplete", None, 10, 12, error_type="cancelled"),
            "cancelled at the end of the run",
        ),
    ],
)
def test_outcomes_against_the_soaks_own_stops(record: RequestRecord, expected: str) -> None:
    assert outcome(record, STOPS) == expected


def test_memory_growth_is_taken_over_the_window_from_medians() -> None:
    flat = [(float(t), 1000.0 + (5 if t % 20 == 0 else 0)) for t in range(0, 300, 10)]
    assert rss_growth(flat, 100.0)["growth"] == pytest.approx(0.0, abs=0.01)
    # Growth before the window (warm-up) does not count; growth inside it does.
    warming = [(float(t), 500.0 + t) for t in range(0, 100, 10)] + flat[10:]
    assert rss_growth(warming, 100.0)["growth"] == pytest.approx(0.0, abs=0.01)
    leaking = [(float(t), 1000.0 * (1 + t / 1000)) for t in range(0, 310, 10)]
    grown = rss_growth(leaking, 100.0)
    assert grown["growth"] == pytest.approx(1290 / 1110 - 1)  # medians at 110 and 290 s
    assert grown["growth"] > 0.10
    # One spike is not a trend: medians of three at each end.
    spiky = [(t, v * (3 if t == 290.0 else 1)) for t, v in flat]
    assert rss_growth(spiky, 100.0)["growth"] == pytest.approx(0.0, abs=0.01)
    few = rss_growth(flat, 270.0)
    assert few["growth"] is None and "3 samples" in few["why"]


def test_metrics_text_is_read_for_the_soaks_series() -> None:
    text = "\n".join(
        [
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            "process_resident_memory_bytes 1.79e+09",
            "process_open_fds 25.0",
            "process_max_fds 20000.0",
            "sovllm:database_size_bytes 4096.0",
            "sovllm:database_wal_bytes 576832.0",
            "sovllm:audit_entries 75.0",
            "sovllm:audit_entries_other 1.0",
            'sovllm:stops_active{scope="all"} 0.0',
        ]
    )
    assert parse_metrics(text) == {
        "rss_bytes": 1.79e9,
        "open_fds": 25.0,
        "db_bytes": 4096.0,
        "wal_bytes": 576832.0,
        "audit_entries": 75.0,
    }


def test_proc_of_a_live_process_and_of_a_gone_one() -> None:
    mine = proc_values(os.getpid())
    assert mine["rss_bytes"] > 10e6 and mine["open_fds"] >= 3
    assert proc_values(2**22 + 1) == {}
