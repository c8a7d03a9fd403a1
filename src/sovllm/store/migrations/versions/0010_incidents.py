"""Incidents: serious incidents (AI Act Art. 73) and security incidents (ISO/IEC 27001
A.5.24-A.5.28), with what was done about each (opening, links, status changes).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("aware_at", sa.Float, nullable=False),
        sa.Column("deadline_at", sa.Float, nullable=True),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("reported_at", sa.Float, nullable=True),
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
    )
    op.create_index("ix_incidents_status", "incidents", ["status"])
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("from_seq", sa.BigInteger, nullable=True),
        sa.Column("to_seq", sa.BigInteger, nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
    )
    op.create_index("ix_incident_events_incident_id", "incident_events", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_incident_events_incident_id", "incident_events")
    op.drop_table("incident_events")
    op.drop_index("ix_incidents_status", "incidents")
    op.drop_table("incidents")
