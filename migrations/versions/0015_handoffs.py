"""hand-offs: a case offered by one desk to another, accepted or not

Revision ID: 0015_handoffs
Revises: 0014_broadcast_fan_out
Create Date: 2026-12-07 16:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_handoffs"
down_revision: str | None = "0014_broadcast_fan_out"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("state = 'offered'")


def upgrade() -> None:
    op.create_table(
        "handoffs",
        sa.Column("defender_id", sa.Uuid(), nullable=False),
        sa.Column("from_org_id", sa.Uuid(), nullable=False),
        sa.Column("to_org_id", sa.Uuid(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "offered",
                "accepted",
                "declined",
                "withdrawn",
                name="handoffstate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("offered_by", sa.String(length=120), nullable=False),
        sa.Column("decided_by", sa.String(length=120), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["defender_id"],
            ["defenders.id"],
            name=op.f("fk_handoffs_defender_id_defenders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["from_org_id"],
            ["organisations.id"],
            name=op.f("fk_handoffs_from_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_org_id"],
            ["organisations.id"],
            name=op.f("fk_handoffs_to_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoffs")),
    )
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoffs_defender_id"), ["defender_id"], unique=False)
        batch_op.create_index(
            "ux_handoffs_open",
            ["defender_id"],
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )
        batch_op.create_index("ix_handoffs_from", ["from_org_id", "created_at"], unique=False)
        batch_op.create_index("ix_handoffs_to", ["to_org_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("handoffs")
