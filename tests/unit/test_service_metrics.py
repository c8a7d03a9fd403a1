"""The gauges alerts fire on: the audit log's health, the stops in force, the data volume, and
the error answers by code."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from sqlalchemy import text

from sovllm.engines.base import EngineStats, GenerationOutput, Timings
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.report import Report
from sovllm.governance.oversight import Oversight, new_stop
from sovllm.observability.audit_metrics import AuditCollector
from sovllm.observability.metrics import Metrics
from sovllm.observability.service_metrics import DataVolumeCollector, StopsCollector
from sovllm.store.db import Database

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(*collectors: Collector) -> Samples:
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_stops_by_scope_follow_the_gateways_copy(db: Database) -> None:
    oversight = Oversight(db)
    collector = StopsCollector(oversight)
    zero = {("sovllm:stops_active", (("scope", s),)): 0.0 for s in ("all", "model", "tenant")}
    assert scrape(collector) == zero
    actor: dict[str, object] = {"kind": "cli"}
    oversight.apply(
        [
            new_stop("tenant", "a", "drain", "", actor),
            new_stop("tenant", "b", "cut", "", actor),
            new_stop("all", "", "drain", "maintenance", actor),
        ]
    )
    found = scrape(collector)
    assert found[("sovllm:stops_active", (("scope", "tenant"),))] == 2.0
    assert found[("sovllm:stops_active", (("scope", "all"),))] == 1.0
    assert found[("sovllm:stops_active", (("scope", "model"),))] == 0.0
    oversight.apply([])
    assert scrape(collector) == zero


def test_the_data_volume_is_statvfs_of_data_dir(tmp_path: Path) -> None:
    fs = os.statvfs(tmp_path)
    found = scrape(DataVolumeCollector(tmp_path))
    assert found[("sovllm:data_volume_size_bytes", ())] == fs.f_blocks * fs.f_frsize
    free = found[("sovllm:data_volume_free_bytes", ())]
    assert abs(free - fs.f_bavail * fs.f_frsize) < 64 * 2**20  # other writers on the disk
    assert 0 < free <= found[("sovllm:data_volume_size_bytes", ())]
    assert scrape(DataVolumeCollector(tmp_path / "missing")) == {}


def _audit(db: Database, tmp_path: Path) -> AuditLog:
    signer = Signer.load_or_create(tmp_path / "signing.key", "test-log")
    # No checkpoint by count or time while the test writes: it signs when it says so.
    log = AuditLog(db, signer, "test-log", checkpoint_every=10**6, checkpoint_seconds=10**6)
    log.start()
    return log


def test_audit_size_checkpoint_age_and_last_verification(db: Database, tmp_path: Path) -> None:
    log = _audit(db, tmp_path)
    now = [time.time()]
    collector = AuditCollector(db, ttl_s=0.0, clock=lambda: now[0])
    try:
        empty = scrape(collector)
        assert empty == {
            ("sovllm:audit_entries", ()): 0.0,
            ("sovllm:audit_checkpoint_entries", ()): 0.0,
            ("sovllm:audit_unsigned_age_seconds", ()): 0.0,
        }  # never verified: no verification series at all
        for i in range(3):
            log.append("request.begin", {"i": i}, f"req-{i}").result(timeout=30)
        with db.engine.connect() as conn:
            written = float(
                conn.execute(text("SELECT at FROM audit_entries WHERE seq = 0")).one()[0]
            )
        now[0] = written + 600
        found = scrape(collector)
        assert found[("sovllm:audit_entries", ())] == 3.0
        assert found[("sovllm:audit_checkpoint_entries", ())] == 0.0
        assert found[("sovllm:audit_unsigned_age_seconds", ())] == pytest.approx(600)
        log.checkpoint()
        log.append("request.begin", {"i": 3}, "req-3").result(timeout=30)
        found = scrape(collector)
        assert found[("sovllm:audit_entries", ())] == 4.0
        assert found[("sovllm:audit_checkpoint_entries", ())] == 3.0
        assert found[("sovllm:audit_unsigned_age_seconds", ())] < 600  # entry 3 is newer
        log.checkpoint()
        assert scrape(collector)[("sovllm:audit_unsigned_age_seconds", ())] == 0.0

        bad = Report()
        bad.problems.append("entry 1 was edited")
        for report, ok in ((Report(), 1.0), (bad, 0.0)):
            fields = records.audit_verify({"kind": "test"}, report)
            log.append(records.VERIFY, fields).result(timeout=30)
            found = scrape(collector)
            assert found[("sovllm:audit_last_verify_ok", ())] == ok
            assert abs(found[("sovllm:audit_last_verify_timestamp_seconds", ())] - time.time()) < 60
    finally:
        log.close()


def test_a_scrape_within_the_ttl_reads_nothing(db: Database, tmp_path: Path) -> None:
    log = _audit(db, tmp_path)
    collector = AuditCollector(db, ttl_s=3600.0)
    try:
        assert scrape(collector)[("sovllm:audit_entries", ())] == 0.0
        log.append("request.begin", {}, "req-0").result(timeout=30)
        assert scrape(collector)[("sovllm:audit_entries", ())] == 0.0  # the cached read
        assert AuditCollector(db, ttl_s=3600.0).health().entries == 1
    finally:
        log.close()


def test_error_answers_are_counted_by_status_and_code() -> None:
    metrics = Metrics(["m"], lambda _: EngineStats(0, 0, 1, 1))
    metrics.observe_error(429, "tokens_per_minute_exceeded")
    metrics.observe_error(429, "tokens_per_minute_exceeded")
    metrics.observe_error(503, "service_stopped")
    metrics.observe_error(404, None)
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == "sovllm:request_errors_total":
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    key = "sovllm:request_errors_total"
    assert found == {
        (key, (("code", "tokens_per_minute_exceeded"), ("status", "429"))): 2.0,
        (key, (("code", "service_stopped"), ("status", "503"))): 1.0,
        (key, (("code", "none"), ("status", "404"))): 1.0,
    }


def test_tpot_is_the_decode_time_over_the_tokens_after_the_first() -> None:
    metrics = Metrics(["m"], lambda _: EngineStats(0, 0, 1, 1))
    timings = Timings(arrival=10.0, scheduled=10.1, first_token=10.5, finished=12.5)
    done = GenerationOutput("", (), 3, 5, "stop", timings)
    metrics.observe_finished("m", done)  # 2 s over 4 tokens after the first: 0.5 s each
    one = GenerationOutput("", (), 3, 1, "length", timings)
    metrics.observe_finished("m", one)  # a single token has no time per output token
    samples = {
        (s.name, s.labels.get("le")): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
        if s.name.startswith("sovllm:time_per_output_token_seconds")
    }
    assert samples[("sovllm:time_per_output_token_seconds_count", None)] == 1.0
    assert samples[("sovllm:time_per_output_token_seconds_sum", None)] == pytest.approx(0.5)
    assert samples[("sovllm:time_per_output_token_seconds_bucket", "0.4")] == 0.0
    assert samples[("sovllm:time_per_output_token_seconds_bucket", "0.5")] == 1.0
