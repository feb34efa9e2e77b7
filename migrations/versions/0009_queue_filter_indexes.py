"""the desk's queue filtered by kind or by priority reads its page only

Revision ID: 0009_queue_filter_indexes
Revises: 0008_pin_failed_at
Create Date: 2026-12-06 22:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_queue_filter_indexes"
down_revision: str | None = "0008_pin_failed_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_alerts_org_kind_recent", ["org_id", "kind", "triggered_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_alerts_org_priority_recent",
            ["org_id", "priority", "triggered_at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_org_priority_recent")
        batch_op.drop_index("ix_alerts_org_kind_recent")
