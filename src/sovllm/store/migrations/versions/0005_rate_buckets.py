"""Per-second rate buckets replace one row per request in the RPM/TPM windows.

A window then reads at most 61 rows per scope whatever the request rate (a key at 100 requests/s
had 6,000 rows in its window). Events in the window are carried over into their buckets. Upgrade
every gateway together: one still running the old code fails its requests once the old table is
gone. A downgrade starts with empty windows (per-request rows cannot be rebuilt from buckets).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("scope", sa.String(48), primary_key=True),  # "k:<key id>" or "t:<tenant id>"
        sa.Column("second", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )
    # Whole seconds: SQLite's CAST truncates (= floor for these positive times), PostgreSQL's
    # rounds, so it is floored first there.
    second = (
        "CAST(floor(at) AS BIGINT)"
        if op.get_context().dialect.name == "postgresql"
        else ("CAST(at AS INTEGER)")
    )
    if op.get_context().dialect.name == "postgresql":
        # No admission by a gateway still on the old code may slip in between copy and drop.
        op.execute("LOCK TABLE rate_events IN SHARE MODE")
    for prefix, column in (("k:", "key_id"), ("t:", "tenant_id")):
        op.execute(
            f"INSERT INTO rate_buckets (scope, second, requests, tokens) "
            f"SELECT '{prefix}' || CAST({column} AS VARCHAR(40)), {second}, count(*), sum(tokens) "
            f"FROM rate_events GROUP BY {column}, {second}"
        )
    op.drop_index("ix_rate_events_key_at", "rate_events")
    op.drop_index("ix_rate_events_tenant_at", "rate_events")
    op.drop_table("rate_events")


def downgrade() -> None:
    op.create_table(
        "rate_events",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rate_events_key_at", "rate_events", ["key_id", "at", "tokens"])
    op.create_index("ix_rate_events_tenant_at", "rate_events", ["tenant_id", "at", "tokens"])
    op.drop_table("rate_buckets")
