"""Gateway instances: who owns an in-flight row, so a dead gateway's reservations are released.

`inflight.owner` names the gateway process that admitted the request (a row of
`gateway_instances`: its host, pid and process start time, and a heartbeat on the database's
clock). A gateway releases the rows of instances that are dead at its start-up and on each
heartbeat (governance/instances.py). Rows from before this revision have NULL: the lease
(quotas.LEASE_S) still bounds them, as before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_instances",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("proc_start", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("inflight") as batch:
        batch.add_column(sa.Column("owner", sa.String(32), nullable=True))
    op.create_index("ix_inflight_owner", "inflight", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_inflight_owner", "inflight")
    with op.batch_alter_table("inflight") as batch:
        batch.drop_column("owner")
    op.drop_table("gateway_instances")
