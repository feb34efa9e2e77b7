"""when the defender last typed a wrong PIN

A wrong PIN counts toward the silent duress alert (core.pins) only within a day of the one
before: typos days apart no longer add up to a duress alert.

Revision ID: 0008_pin_failed_at
Revises: 0007_audit_org_seq
Create Date: 2026-12-06 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_pin_failed_at"
down_revision: str | None = "0007_audit_org_seq"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("defenders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pin_failed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("defenders", schema=None) as batch_op:
        batch_op.drop_column("pin_failed_at")
