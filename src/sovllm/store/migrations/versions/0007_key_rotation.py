"""Key rotation.

Each wrapped subject key records which master key wraps it (`subject_keys.master_id`), so a
master-key rotation that was interrupted re-wraps only what is left when it resumes.

Rows from before this revision have NULL: they are under the master key the data folder had
then (the one in `master.key` until the first rotation completes).

`audit_entries.kind` gets an index: each checkpoint reads the newest signing-key transition.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subject_keys") as batch:
        batch.add_column(sa.Column("master_id", sa.String(16), nullable=True))
    op.create_index("ix_audit_entries_kind", "audit_entries", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_kind", "audit_entries")
    with op.batch_alter_table("subject_keys") as batch:
        batch.drop_column("master_id")
