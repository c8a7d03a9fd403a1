"""Each request's energy in the usage table (SQLite and PostgreSQL), its roll-up past retention,
the per tenant and day report, and the migration that adds the columns."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect

from sovllm.governance import identity as idn
from sovllm.governance import quotas, retention, tenants
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.usage import energy_by_tenant_day, usage
from sovllm.observability.energy import Energy
from sovllm.store import migrate
from sovllm.store.db import Database

RAPL, EST = "measured:rapl", "estimated"


def principal(db: Database, tenant: str | None = None) -> idn.Principal:
    name = tenant or f"t{uuid.uuid4().hex[:8]}"
    if tenant is None or not any(t.name == tenant for t in tenants.list_tenants(db)):
        tenants.create_tenant(db, name)
    raw, _ = tenants.create_key(db, name, idn.Role.USER)
    return idn.authenticate(db, raw)


def spend(db: Database, p: idn.Principal, day: str, energy: Energy | None) -> None:
    at = dt.datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
    ticket = quotas.admit(db, p, uuid.uuid4().hex, 10, now=at)
    quotas.settle(db, ticket, 6, 4, now=at, energy=energy)


def test_settled_requests_carry_their_energy_per_key_and_day(db: Database) -> None:
    a = principal(db)
    a2 = principal(db, a.tenant)  # a second key of the same tenant
    b = principal(db)
    spend(db, a, "2026-11-02", Energy(10.0, RAPL, 0.5))
    spend(db, a, "2026-11-02", Energy(2.5, RAPL, 0.125))
    spend(db, a2, "2026-11-02", Energy(1.0, EST, None))
    spend(db, b, "2026-11-02", None)  # no energy recorded: counted, with 0 J and no source
    spend(db, a, "2026-11-03", Energy(3.6e6, RAPL, 400.0))
    rows = {(r.day, r.key_id): r for r in usage(db)}
    first = rows[("2026-11-02", a.key_id)]
    assert (first.requests, first.energy_joules, first.energy_co2e_g) == (2, 12.5, 0.625)
    assert first.energy_source == RAPL
    other_key = rows[("2026-11-02", a2.key_id)]
    assert (other_key.energy_joules, other_key.energy_source) == (1.0, EST)
    none = rows[("2026-11-02", b.key_id)]
    assert (none.requests, none.energy_joules, none.energy_source) == (1, 0.0, "")
    report = {(e.day, e.tenant): e for e in energy_by_tenant_day(usage(db))}
    day = report[("2026-11-02", a.tenant)]
    assert (day.requests, day.joules, day.co2e_g, day.source) == (3, 13.5, 0.625, "mixed")
    assert report[("2026-11-03", a.tenant)].kwh == pytest.approx(1.0)
    assert report[("2026-11-02", b.tenant)].source == ""


def test_a_key_whose_requests_change_source_reads_mixed(db: Database) -> None:
    a = principal(db)
    spend(db, a, "2026-11-02", Energy(1.0, EST, None))
    spend(db, a, "2026-11-02", None)  # nothing recorded: keeps the source
    assert usage(db)[0].energy_source == EST
    spend(db, a, "2026-11-02", Energy(1.0, RAPL, None))
    assert usage(db)[0].energy_source == "mixed"


def test_the_roll_up_past_retention_keeps_the_energy(db: Database, tmp_path: Path) -> None:
    a = principal(db)
    spend(db, a, "2025-01-05", Energy(100.0, RAPL, 5.0))
    spend(db, a, "2025-01-20", Energy(50.0, RAPL, 2.5))
    spend(db, a, "2025-03-01", Energy(1.0, RAPL, 0.05))
    log = AuditLog(db, Signer.load_or_create(tmp_path / "audit.key", "test-log"), "test-log")
    now = dt.datetime(2025, 3, 12, 12, tzinfo=dt.UTC).timestamp()
    assert retention.roll_up_usage(log, 40, {"job": "test"}, now) == 2
    report = {e.day: e for e in energy_by_tenant_day(usage(db))}
    assert (report["2025-01"].joules, report["2025-01"].co2e_g) == (150.0, 7.5)
    assert report["2025-03-01"].joules == 1.0


def test_migration_0008_adds_and_removes_the_columns(database_url_any: str) -> None:
    db = Database(database_url_any)
    try:
        migrate.upgrade(db, "0008")
        columns = {c["name"] for c in inspect(db.engine).get_columns("usage_daily")}
        assert {"energy_joules", "energy_co2e_g", "energy_source"} <= columns
        monthly = {c["name"] for c in inspect(db.engine).get_columns("usage_monthly")}
        assert {"energy_joules", "energy_co2e_g"} <= monthly
        migrate_down(db, "0007")
        columns = {c["name"] for c in inspect(db.engine).get_columns("usage_daily")}
        assert "energy_joules" not in columns
        migrate.upgrade(db, "head")
    finally:
        db.dispose()


def migrate_down(db: Database, revision: str) -> None:
    from alembic import command

    command.downgrade(migrate._config(db), revision)
