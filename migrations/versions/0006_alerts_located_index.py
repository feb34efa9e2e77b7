"""alerts still holding a location: a partial index, so the retention purge reads only those

Revision ID: 0006_alerts_located
Revises: 0005_throttle_hits
Create Date: 2026-12-05 00:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_alerts_located"
down_revision: str | None = "0005_throttle_hits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCATED = sa.text("location_sealed IS NOT NULL")  # see core.models.alert
LOCATED_RESOLVED = sa.text("location_sealed IS NOT NULL AND state = 'resolved'")


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_alerts_located",
            ["state"],
            unique=False,
            sqlite_where=LOCATED_RESOLVED,
            postgresql_where=LOCATED,
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_located")
