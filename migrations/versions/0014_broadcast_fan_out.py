"""a broadcast's unfinished fan-out: written in chunks, resumed by the sweep

Revision ID: 0014_broadcast_fan_out
Revises: 0013_queue_versions
Create Date: 2026-12-07 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_broadcast_fan_out"
down_revision: str | None = "0013_queue_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = sa.text("fan_out_since IS NOT NULL")


def upgrade() -> None:
    # NULL: finished. Every broadcast written before this revision was written whole, in one
    # transaction: none is left to resume.
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fan_out_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_broadcasts_unfinished",
            ["fan_out_since"],
            unique=False,
            sqlite_where=_UNFINISHED,
            postgresql_where=_UNFINISHED,
        )


def downgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_index("ix_broadcasts_unfinished")
        batch_op.drop_column("fan_out_since")
