"""Failed authentications: key prefixes, per-minute groups, the per-source limit, the flush."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sovllm.governance import access
from sovllm.governance.access import AccessGuard, logged_denials, presented_prefix
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import verify_database
from sovllm.store.db import Database
from tests.conftest import wait_until

KEY = "sk-sovllm-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:  # a whole minute
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_key_is_never_written_whole() -> None:
    assert presented_prefix(None) == "none" and presented_prefix("") == "none"
    assert presented_prefix(KEY) == "sk-sovllm-AbCd"  # what a key listing shows
    for secret in ("hunter2", "correct horse battery", "sk-sovllm-Ab", "x"):
        shown = presented_prefix(secret)
        assert len(shown) <= len(secret) // 3 and secret not in shown
    assert presented_prefix("ab\ncd\x00efghijkl") == "ab?c"


def test_a_burst_is_one_group_per_minute_prefix_source_and_status() -> None:
    clock = Clock()
    guard = AccessGuard(1000, clock)
    for i in range(120):
        clock.now += 0.25  # 30 s of failures
        guard.denied("10.0.0.1", presented_prefix(KEY), 401, "unknown", f"/v1/p{i % 7}")
    guard.denied("10.0.0.1", "none", 401, "missing", "/v1/models")
    guard.denied("10.0.0.2", presented_prefix(KEY), 403, "role", "/admin/v1/keys")
    assert guard.closed() == []  # the minute is still open: nothing to write yet
    assert len(guard.pending()) == 3
    clock.now += 60
    groups = {(g["source"], g["key_prefix"], g["status"]): g for g in guard.closed()}
    assert set(groups) == {
        ("10.0.0.1", "sk-sovllm-AbCd", 401),
        ("10.0.0.1", "none", 401),
        ("10.0.0.2", "sk-sovllm-AbCd", 403),
    }
    burst = groups[("10.0.0.1", "sk-sovllm-AbCd", 401)]
    assert burst["count"] == 120 and burst["reasons"] == {"unknown": 120}
    assert burst["minute"] == "2027-01-15T08:00:00+00:00"
    assert burst["paths"] == [f"/v1/p{i}" for i in range(access.MAX_PATHS)]
    assert guard.closed() == [] and guard.pending() == []  # written once, then forgotten


def test_a_minute_boundary_splits_a_group() -> None:
    clock = Clock(1_800_000_059.5)
    guard = AccessGuard(1000, clock)
    guard.denied("s", "p", 401, "unknown", "/")
    clock.now += 1
    guard.denied("s", "p", 401, "unknown", "/")
    assert [g["count"] for g in guard.closed()] == [1]
    assert [g["count"] for g in guard.closed(everything=True)] == [1]  # at shutdown


def test_a_source_past_the_limit_waits_until_its_oldest_failure_is_a_minute_old() -> None:
    clock = Clock()
    guard = AccessGuard(5, clock)
    for _ in range(4):
        guard.denied("10.0.0.9", "none", 401, "missing", "/v1/models")
        clock.now += 1
    assert guard.retry_after("10.0.0.9") is None  # 4 of 5
    guard.denied("10.0.0.9", "none", 403, "role", "/admin/v1/keys")  # 403s count too
    assert guard.retry_after("10.0.0.9") == 56  # the first failure was 4 s ago
    assert guard.retry_after("10.0.0.8") is None  # another source is not affected
    # Refusals while throttled do not prolong it, and are one group whatever the key.
    for i in range(50):
        guard.denied("10.0.0.9", f"sk-sovllm-{i:04d}", 429, "throttled", "/v1/models")
    clock.now += 55.5
    assert guard.retry_after("10.0.0.9") == 1
    clock.now += 0.5
    assert guard.retry_after("10.0.0.9") is None
    throttled = [g for g in guard.closed(everything=True) if g["status"] == 429]
    assert [(g["key_prefix"], g["count"]) for g in throttled] == [("*", 50)]


def test_a_flood_from_many_sources_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "MAX_GROUPS", 10)
    guard = AccessGuard(1000, Clock())
    for i in range(500):
        guard.denied(f"10.1.{i // 250}.{i % 250}", f"sk-sovllm-{i:04d}", 401, "unknown", "/")
    groups = guard.closed(everything=True)
    assert len(groups) == 11
    overflow = [g for g in groups if g["source"] == "*"]
    assert len(overflow) == 1 and overflow[0]["count"] == 490


def test_quiet_sources_are_forgotten() -> None:
    clock = Clock()
    guard = AccessGuard(3, clock)
    guard.denied("a", "none", 401, "missing", "/")
    clock.now += 61
    guard.closed()
    assert guard._failures == {}


def test_the_flush_loop_writes_each_closed_minute_to_the_log(db: Database, tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "signing.key", "test-log")
    log = AuditLog(db, signer, "test-log")
    log.start()
    guard = AccessGuard(1000, window_s=0.3)  # a short "minute", the real clock and loop

    async def scenario() -> None:
        task = asyncio.create_task(guard.run(log))
        try:
            for _ in range(40):
                guard.denied("10.0.0.3", "sk-sovllm-AbCd", 401, "unknown", "/v1/models")

            def flushed() -> bool:
                return sum(int(str(g["count"])) for g in logged_denials(db, 10)) == 40

            await asyncio.to_thread(wait_until, flushed, "the flushed groups", 10)
        finally:
            task.cancel()

    asyncio.run(scenario())
    log.close()
    groups = logged_denials(db, 10)
    assert sum(int(str(g["count"])) for g in groups) == 40
    assert len(groups) <= 2  # one per window it spanned, never one per refusal
    assert {g["key_prefix"] for g in groups} == {"sk-sovllm-AbCd"}
    assert verify_database(db, signer.verifier).ok
