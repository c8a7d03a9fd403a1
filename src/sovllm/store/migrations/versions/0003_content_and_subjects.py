"""Content policy per tenant; stored content encrypted per data subject.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("content_policy", sa.String(16), nullable=False, server_default="none")
        )
        batch.add_column(
            sa.Column("mask_prompts", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "subject_keys",
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("wrapped_key", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("erased_at", sa.Float, nullable=True),
    )
    op.create_table(
        "stored_content",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("part", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_stored_content_request_id", "stored_content", ["request_id"])
    op.create_index("ix_stored_content_subject", "stored_content", ["subject"])
    op.create_index("ix_stored_content_created_at", "stored_content", ["created_at"])


def downgrade() -> None:
    op.drop_table("stored_content")
    op.drop_table("subject_keys")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("mask_prompts")
        batch.drop_column("content_policy")
