"""indexes for retention: it reads what it purges, not whole tables

The purge (core.retention, every ten minutes in every engine process) cleared locations by
reading every resolved alert, deleted finished outbox rows by reading every finished row, and
looked for unreferenced addresses with a scan of the outbox and of the trusted contacts per
address; deleting an address scanned the outbox again for its ON DELETE SET NULL.

Revision ID: 0006_retention_indexes
Revises: 0005_throttle_hits
Create Date: 2026-12-05 00:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_retention_indexes"
down_revision: str | None = "0005_throttle_hits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCATED = sa.text("location_sealed IS NOT NULL")
WEBHOOK = sa.text("webhook_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_alerts_located",
            ["state"],
            unique=False,
            sqlite_where=LOCATED,
            postgresql_where=LOCATED,
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_address_id", ["address_id"], unique=False)
        batch_op.create_index("ix_outbox_ended", ["state", "created_at"], unique=False)
        batch_op.create_index(
            "ix_outbox_webhook_id",
            ["webhook_id"],
            unique=False,
            sqlite_where=WEBHOOK,
            postgresql_where=WEBHOOK,
        )
    with op.batch_alter_table("trusted_contacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trusted_contacts_address_id"), ["address_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("trusted_contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trusted_contacts_address_id"))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_webhook_id")
        batch_op.drop_index("ix_outbox_ended")
        batch_op.drop_index("ix_outbox_address_id")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_located")
