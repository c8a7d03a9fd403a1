"""Energy per request.

`usage_daily` counts each day's joules and grams of CO2e per key, and where the joules were
read (`energy_source`: `measured:rapl|nvml|dcgm`, `estimated`, `mixed`, or empty);
`usage_monthly` keeps the joules and CO2e of the days it rolls up. Rows from before this
revision have 0 (no energy was recorded).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_daily") as batch:
        batch.add_column(sa.Column("energy_joules", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("energy_co2e_g", sa.Float, nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("energy_source", sa.String(16), nullable=False, server_default="")
        )
    with op.batch_alter_table("usage_monthly") as batch:
        batch.add_column(sa.Column("energy_joules", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("energy_co2e_g", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_monthly") as batch:
        batch.drop_column("energy_co2e_g")
        batch.drop_column("energy_joules")
    with op.batch_alter_table("usage_daily") as batch:
        batch.drop_column("energy_source")
        batch.drop_column("energy_co2e_g")
        batch.drop_column("energy_joules")
