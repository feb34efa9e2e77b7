"""an organisation's audit entries by (org_id, seq)

An organisation sees its own entries numbered 1, 2, 3... (core.audit.org_entries): the number
is a count of its entries up to that one, and a page starts at an offset in that order. Both
read the index (org_id, seq) alone, where the index on org_id sent every entry to the table.

Revision ID: 0007_audit_org_seq
Revises: 0006_retention_indexes
Create Date: 2026-12-06 05:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_audit_org_seq"
down_revision: str | None = "0006_retention_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index("ix_audit_entries_org_seq", ["org_id", "seq"], unique=False)
        batch_op.drop_index("ix_audit_entries_org_id")


def downgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index("ix_audit_entries_org_id", ["org_id"], unique=False)
        batch_op.drop_index("ix_audit_entries_org_seq")
