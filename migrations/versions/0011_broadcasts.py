"""broadcasts from the desk to its defenders

Revision ID: 0011_broadcasts
Revises: 0010_report_review_enc
Create Date: 2026-12-07 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_broadcasts"
down_revision: str | None = "0010_report_review_enc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("text_enc", sa.LargeBinary(), nullable=True),
        sa.Column("sent_by", sa.String(length=80), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("dek", sa.LargeBinary(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_broadcasts_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_broadcasts_org_recent", ["org_id", "created_at", "id"], unique=False
        )
    op.create_table(
        "broadcast_recipients",
        sa.Column("broadcast_id", sa.Uuid(), nullable=False),
        sa.Column("defender_id", sa.Uuid(), nullable=False),
        sa.Column("outbox_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_broadcast_recipients_broadcast_id_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["defender_id"],
            ["defenders.id"],
            name=op.f("fk_broadcast_recipients_defender_id_defenders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "broadcast_id", "defender_id", name=op.f("pk_broadcast_recipients")
        ),
    )
    with op.batch_alter_table("broadcast_recipients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_broadcast_recipients_defender_id"), ["defender_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("broadcast_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcast_recipients_defender_id"))
    op.drop_table("broadcast_recipients")
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_index("ix_broadcasts_org_recent")
    op.drop_table("broadcasts")
