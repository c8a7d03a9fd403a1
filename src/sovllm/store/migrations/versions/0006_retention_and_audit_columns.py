"""Retention that deletes: audit bodies can be pruned, usage rolls up per tenant and month; every
stored audit column is checkable.

- `audit_entries.body` becomes nullable and `pruned_by` names the `retention.prune` entry that
  removed it (the leaf hash stays, so the tree and every proof still verify).
- `audit_entries.at` is set to exactly the body's `time` (it was the unrounded clock reading),
  so verify compares it with `==`.
- `audit_checkpoints.at` is dropped: the signed note carries no time, so nothing could check
  it, and nothing read it.
- `usage_monthly`: usage past `retention.usage_days`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PAGE = 10_000


def _normalize_at() -> None:
    conn = op.get_bind()
    last = -1
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT seq, at, body FROM audit_entries WHERE seq > :last AND body IS NOT "
                "NULL ORDER BY seq LIMIT :n"
            ),
            {"last": last, "n": _PAGE},
        ).all()
        if not rows:
            return
        changes = []
        for seq, at, body in rows:
            exact = dt.datetime.fromisoformat(json.loads(body)["time"]).timestamp()
            if exact != at:
                changes.append({"seq": seq, "at": exact})
        if changes:
            conn.execute(sa.text("UPDATE audit_entries SET at = :at WHERE seq = :seq"), changes)
        last = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.alter_column("body", existing_type=sa.Text, nullable=True)
        batch.add_column(sa.Column("pruned_by", sa.BigInteger, nullable=True))
    _normalize_at()
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.drop_column("at")
    op.create_table(
        "usage_monthly",
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("tenant_id", sa.Integer, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    pruned = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM audit_entries WHERE body IS NULL"))
        .scalar_one()
    )
    if pruned:
        raise RuntimeError(
            f"{pruned} audit entries were pruned past retention: revision 0005 cannot hold them"
        )
    op.drop_table("usage_monthly")
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.add_column(sa.Column("at", sa.Float, nullable=False, server_default="0"))
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_column("pruned_by")
        batch.alter_column("body", existing_type=sa.Text, nullable=False)
