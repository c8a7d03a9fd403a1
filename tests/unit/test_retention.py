"""Retention deletes, on a simulated clock, on SQLite and PostgreSQL: audit bodies past
audit_days are pruned (hashes, tree, checkpoints and proofs stay valid), usage days past
usage_days roll up per tenant and month, content past content_days goes; each is recorded."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from sovllm.config import RetentionSettings
from sovllm.governance import identity as idn
from sovllm.governance import quotas, retention, tenants
from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import Signer, parse
from sovllm.governance.audit.export import export_lines, verify_export
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.lookup import inclusion, search
from sovllm.governance.audit.verify import verify_database
from sovllm.governance.privacy.content import ContentVault, load_or_create_master
from sovllm.governance.usage import usage
from sovllm.store.db import Database

DAY = 86400.0
T0 = 1_750_000_000.0  # the simulated "then": entries are written at T0 + i
ACTOR = {"job": "test"}
SETTINGS = RetentionSettings(audit_days=200, content_days=30, usage_days=40)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "audit" / "signing.key", "test-log")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def old_log(db: Database, signer: Signer, clock: Clock, n: int) -> AuditLog:
    """n entries written at T0 + i, with checkpoints every 4 and one at the end."""
    log = AuditLog(db, signer, "test-log", checkpoint_every=4, clock=clock)
    log.start()
    for i in range(n):
        clock.now = T0 + i
        log.append("request.begin", {"i": i}, f"req-{i}").result(timeout=30)
    log.close()
    return log


def bodies(db: Database) -> dict[int, str | None]:
    with db.transaction() as s:
        return {int(q): b for q, b in s.execute(text("SELECT seq, body FROM audit_entries"))}


def test_audit_entries_past_retention_lose_their_bodies_and_the_log_still_verifies(
    db: Database, signer: Signer, tmp_path: Path
) -> None:
    clock = Clock(T0)
    log = old_log(db, signer, clock, 6)
    # Later entries, still within retention at the simulated "now".
    clock.now = T0 + 150 * DAY
    log.append("request.begin", {"i": 6}, "req-6").result()
    log.checkpoint()
    now = T0 + 5.5 + SETTINGS.audit_days * DAY  # entries 0..5 are older than 200 days
    clock.now = now
    assert retention.prune_audit(log, SETTINGS.audit_days, ACTOR, now) == 6
    kept = bodies(db)
    assert [seq for seq, b in sorted(kept.items()) if b is None] == [0, 1, 2, 3, 4, 5]
    record = json.loads(kept[7] or "")
    assert record["kind"] == "retention.prune"
    assert {k: record[k] for k in ("setting", "days", "from_seq", "to_seq", "entries")} == {
        "setting": "retention.audit_days",
        "days": 200,
        "from_seq": 0,
        "to_seq": 5,
        "entries": 6,
    }
    # Every checkpoint signed before the prune, and the tree, still verify; the pruned count is
    # reported.
    report = verify_database(db, signer.verifier)
    assert report.ok, report.problems
    assert (report.size, report.pruned, report.checkpoints) == (8, 6, 3)  # at 4, 6, 7
    assert "(6 pruned past retention)" in report.summary()
    lines = list(export_lines(db, None, signer.verifier))
    offline = verify_export(lines, signer.verifier)
    assert offline.ok and offline.pruned == 6, offline.problems
    partial = list(export_lines(db, T0 + 3, signer.verifier))  # starts inside the prune's range
    assert json.loads(partial[0])["from_seq"] == 3
    assert verify_export(partial, signer.verifier).ok
    # A pruned entry's proof holds against the checkpoint signed before the prune, and says
    # when and under which setting it was pruned.
    proof = inclusion(db, "req-2")
    entries = proof["entries"]
    assert isinstance(entries, list) and len(entries) == 1
    entry: dict[str, Any] = entries[0]
    assert entry["body"] is None and entry["kind"] == "request.begin"
    assert entry["pruned"] == {
        "by_entry": 7,
        "time": record["time"],
        "setting": "retention.audit_days",
        "days": 200,
        "cutoff": record["cutoff"],
    }
    note = proof["checkpoint"]
    assert isinstance(note, str)
    cp = parse(note)[0]
    assert merkle.verify_inclusion(
        2,
        cp.size,
        bytes.fromhex(entry["leaf_hash"]),
        [bytes.fromhex(p) for p in entry["proof"]],
        cp.root,
    )
    assert search(db, request_id="req-2")[0]["entry"] == {
        "seq": 2,
        "time": "2025-06-15T15:06:42.000000+00:00",
        "kind": "request.begin",
        "request_id": "req-2",
        "pruned_by": 7,
    }
    # Idempotent; the prune record itself is never pruned.
    assert retention.prune_audit(log, SETTINGS.audit_days, ACTOR, now + 400 * DAY) == 1  # req-6
    assert bodies(db)[7] is not None
    assert verify_database(db, signer.verifier).ok


def test_a_large_prune_is_split_into_bounded_transactions(db: Database, signer: Signer) -> None:
    log = old_log(db, signer, Clock(T0), 7)
    now = T0 + 1000 * DAY
    assert retention.prune_audit(log, 200, ACTOR, now, batch=3) == 7
    with db.transaction() as s:
        records = [
            json.loads(b)
            for (b,) in s.execute(
                text("SELECT body FROM audit_entries WHERE kind = 'retention.prune' ORDER BY seq")
            )
        ]
    assert [(r["from_seq"], r["to_seq"]) for r in records] == [(0, 2), (3, 5), (6, 6)]
    log.checkpoint()
    report = verify_database(db, signer.verifier)
    assert report.ok and report.pruned == 7, report.problems


def _set(sql: str) -> Callable[[Database], None]:
    def run(db: Database) -> None:
        with db.transaction() as s:
            assert s.execute(text(sql)).rowcount == 1  # type: ignore[attr-defined]

    return run


PRUNED_EDITS = {
    # A kept column of a pruned entry: only the prune record's digest can tell; it names where
    # the pruned range starts.
    "at": (_set("UPDATE audit_entries SET at = at - 1 WHERE seq = 3"), 0),
    "kind": (_set("UPDATE audit_entries SET kind = 'admin' WHERE seq = 3"), 0),
    "request_id": (_set("UPDATE audit_entries SET request_id = 'x' WHERE seq = 3"), 0),
    # Caught on the entry itself.
    "at-after-cutoff": (_set("UPDATE audit_entries SET at = at + 1e9 WHERE seq = 3"), 3),
    "pruned_by-gone": (_set("UPDATE audit_entries SET pruned_by = NULL WHERE seq = 3"), 3),
    "pruned_by-elsewhere": (_set("UPDATE audit_entries SET pruned_by = 1 WHERE seq = 3"), 3),
    "seq": (_set("UPDATE audit_entries SET seq = 99 WHERE seq = 3"), 3),
    # The leaf feeds the tree, fixed by the checkpoints signed before the prune: a bound.
    "leaf_hash": (_set(f"UPDATE audit_entries SET leaf_hash = '{'00' * 32}' WHERE seq = 3"), 0),
    # An entry within retention whose body is removed and marked as pruned by the record.
    "fake-prune": (_set("UPDATE audit_entries SET body = NULL, pruned_by = 7 WHERE seq = 6"), 6),
}


@pytest.mark.parametrize("column", list(PRUNED_EDITS))
def test_edits_to_pruned_entries_are_caught(db: Database, signer: Signer, column: str) -> None:
    clock = Clock(T0)
    log = old_log(db, signer, clock, 6)
    clock.now = T0 + 150 * DAY
    log.append("request.begin", {"i": 6}, "req-6").result()
    log.checkpoint()
    retention.prune_audit(log, SETTINGS.audit_days, ACTOR, T0 + 5.5 + 200 * DAY)
    assert verify_database(db, signer.verifier).ok
    tamper, named = PRUNED_EDITS[column]
    tamper(db)
    for report in (
        verify_database(db, signer.verifier),
        verify_export(list(export_lines(db, None, signer.verifier)), signer.verifier),
    ):
        assert not report.ok, column
        assert report.first_bad == named, (column, report.problems)


def principal(db: Database) -> idn.Principal:
    name = f"t{uuid.uuid4().hex[:8]}"
    tenants.create_tenant(db, name)
    raw, _ = tenants.create_key(db, name, idn.Role.USER)
    return idn.authenticate(db, raw)


def spend(db: Database, p: idn.Principal, day: str, prompt: int, completion: int) -> None:
    """A real admission and settlement, at noon UTC of `day` on the simulated clock."""
    at = dt.datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
    ticket = quotas.admit(db, p, uuid.uuid4().hex, prompt + completion, now=at)
    quotas.settle(db, ticket, prompt, completion, now=at)


def test_usage_past_retention_rolls_up_per_tenant_and_month(db: Database, signer: Signer) -> None:
    a, b = principal(db), principal(db)
    for day, who, p, c in [
        ("2025-01-05", a, 10, 1),
        ("2025-01-20", a, 20, 2),
        ("2025-01-20", b, 5, 5),
        ("2025-02-10", a, 7, 7),
        ("2025-03-01", a, 1, 1),
    ]:
        spend(db, who, day, p, c)
    log = AuditLog(db, signer, "test-log")
    now = Clock(0)
    log.clock = now
    # 40 days before 2025-03-12 is 2025-01-31: January goes, February and March stay days.
    now.now = dt.datetime(2025, 3, 12, 12, tzinfo=dt.UTC).timestamp()
    assert retention.roll_up_usage(log, 40, ACTOR, now.now) == 3
    report = {
        (r.day, r.tenant): (r.requests, r.prompt_tokens, r.completion_tokens, r.key_id)
        for r in usage(db)
    }
    assert report == {
        ("2025-01", a.tenant): (2, 30, 3, ""),
        ("2025-01", b.tenant): (1, 5, 5, ""),
        ("2025-02-10", a.tenant): (1, 7, 7, a.key_id),
        ("2025-03-01", a.tenant): (1, 1, 1, a.key_id),
    }
    assert [r.day for r in usage(db, tenant=b.tenant)] == ["2025-01"]
    # A month is reported from its first day on: its days before `since` are no longer apart.
    assert [r.day for r in usage(db, since=dt.date(2025, 1, 1))][:2] == ["2025-01", "2025-01"]
    assert [r.day for r in usage(db, since=dt.date(2025, 1, 15))] == ["2025-02-10", "2025-03-01"]
    assert [r.day for r in usage(db, since=dt.date(2025, 2, 1))] == ["2025-02-10", "2025-03-01"]
    # The next run rolls February into its month; a month can be rolled in parts.
    now.now += 20 * DAY
    assert retention.roll_up_usage(log, 40, ACTOR, now.now) == 1
    assert retention.roll_up_usage(log, 40, ACTOR, now.now) == 0
    assert {(r.day, r.prompt_tokens) for r in usage(db, tenant=a.tenant)} == {
        ("2025-01", 30),
        ("2025-02", 7),
        ("2025-03-01", 1),
    }
    with db.transaction() as s:
        records = [
            json.loads(x)
            for (x,) in s.execute(
                text("SELECT body FROM audit_entries WHERE kind = 'retention.usage' ORDER BY seq")
            )
        ]
    assert [(r["day_rows"], r["months"], r["before_day"]) for r in records] == [
        (3, ["2025-01"], "2025-01-31"),
        (1, ["2025-02"], "2025-02-20"),
    ]
    assert records[0]["setting"] == "retention.usage_days" and records[0]["days"] == 40


def test_one_run_applies_every_setting(db: Database, signer: Signer, tmp_path: Path) -> None:
    vault = ContentVault(db, load_or_create_master(tmp_path / "master.key"))
    vault.store("r1", "user:a", "full", "prompt", "hello")
    p = principal(db)
    spend(db, p, "2025-06-01", 3, 4)
    clock = Clock(T0)
    log = old_log(db, signer, clock, 2)
    now = time.time() + 400 * DAY  # everything above is past its retention then
    clock.now = now
    done = retention.run(SETTINGS, vault, log, ACTOR, now=now)
    assert done == retention.Result(content_records=1, audit_entries=2, usage_rows=1)
    assert vault.read("r1") == []
    kinds = [json.loads(b)["kind"] for b in bodies(db).values() if b is not None]
    assert kinds[-3:] == ["privacy.purge", "retention.prune", "retention.usage"]
    # The run signed its records: the newest checkpoint covers them all.
    note = log.latest_note()
    assert note is not None and parse(note)[0].size == len(bodies(db))
    assert retention.run(SETTINGS, vault, log, ACTOR, now=now) == retention.Result(0, 0, 0)
    log.checkpoint()
    report = verify_database(db, signer.verifier)
    assert report.ok and report.pruned == 2, report.problems
