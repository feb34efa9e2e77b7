"""shared throttle hits: login, export and invite limits counted across API processes

Revision ID: 0005_throttle_hits
Revises: 0004
Create Date: 2026-12-04 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_throttle_hits"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "throttle_hits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_throttle_hits")),
    )
    with op.batch_alter_table("throttle_hits", schema=None) as batch_op:
        batch_op.create_index("ix_throttle_hits_scope_at", ["scope", "at"], unique=False)
        batch_op.create_index(
            "ix_throttle_hits_scope_key_at", ["scope", "key_hash", "at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("throttle_hits", schema=None) as batch_op:
        batch_op.drop_index("ix_throttle_hits_scope_key_at")
        batch_op.drop_index("ix_throttle_hits_scope_at")
    op.drop_table("throttle_hits")
