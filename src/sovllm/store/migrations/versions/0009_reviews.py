"""Human review of answers (AI Act Art. 14(4)(b)-(d)).

`tenants.review_policy`: none (the default, also for every tenant from before this revision),
`sample:P` or `hold`. `reviews`: the answers queued for review, with a held answer sealed until
it is approved (governance/review.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("review_policy", sa.String(16), nullable=False, server_default="none")
        )
    op.create_table(
        "reviews",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("queued_at", sa.Float, nullable=False),
        sa.Column("finish_reason", sa.String(16), nullable=True),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("content_policy", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(32), nullable=True),
        sa.Column("sealed", sa.Text, nullable=True),
        sa.Column("decided_at", sa.Float, nullable=True),
        sa.Column("reviewer", sa.Text, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.Float, nullable=True),
    )
    op.create_index("ix_reviews_tenant_id", "reviews", ["tenant_id"])
    op.create_index("ix_reviews_status", "reviews", ["status"])
    op.create_index("ix_reviews_queued_at", "reviews", ["queued_at"])


def downgrade() -> None:
    op.drop_table("reviews")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("review_policy")
