"""the alert queue's change count, kept by triggers on SQLite (core.queue_versions)

Revision ID: 0013_queue_versions
Revises: 0012_rollcalls
Create Date: 2026-12-07 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_queue_versions"
down_revision: str | None = "0012_rollcalls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As core.queue_versions wrote them on this day (a migration keeps its own copy). A later
# migration that rebuilds ``alerts`` or ``defenders`` (batch_alter_table on SQLite) drops them:
# it must create them again; until then the API keeps no page (core.queue_versions.current).
TRIGGERS = [
    "queue_alert_insert AFTER INSERT ON alerts BEGIN INSERT INTO queue_versions (org_id, version) SELECT NEW.org_id, 1 WHERE true ON CONFLICT (org_id) DO UPDATE SET version = version + 1; END",
    "queue_alert_update AFTER UPDATE OF id, org_id, defender_id, kind, priority, state, dedup_key, do_not_contact, step, triggered_at, acknowledged_at, acknowledged_by, assigned_to, resolved_at, outcome ON alerts BEGIN INSERT INTO queue_versions (org_id, version) SELECT NEW.org_id, 1 WHERE true ON CONFLICT (org_id) DO UPDATE SET version = version + 1; INSERT INTO queue_versions (org_id, version) SELECT OLD.org_id, 1 WHERE OLD.org_id IS NOT NEW.org_id ON CONFLICT (org_id) DO UPDATE SET version = version + 1; END",
    "queue_alert_delete AFTER DELETE ON alerts BEGIN INSERT INTO queue_versions (org_id, version) SELECT OLD.org_id, 1 WHERE true ON CONFLICT (org_id) DO UPDATE SET version = version + 1; END",
    "queue_defender_update AFTER UPDATE OF id, org_id, handle ON defenders BEGIN INSERT INTO queue_versions (org_id, version) SELECT NEW.org_id, 1 WHERE true ON CONFLICT (org_id) DO UPDATE SET version = version + 1; INSERT INTO queue_versions (org_id, version) SELECT OLD.org_id, 1 WHERE OLD.org_id IS NOT NEW.org_id ON CONFLICT (org_id) DO UPDATE SET version = version + 1; END",
    "queue_defender_delete AFTER DELETE ON defenders BEGIN INSERT INTO queue_versions (org_id, version) SELECT OLD.org_id, 1 WHERE true ON CONFLICT (org_id) DO UPDATE SET version = version + 1; END",
]
NAMES = [
    "queue_alert_insert",
    "queue_alert_update",
    "queue_alert_delete",
    "queue_defender_update",
    "queue_defender_delete",
]


def upgrade() -> None:
    op.create_table(
        "queue_versions",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_queue_versions")),
    )
    if op.get_bind().dialect.name == "sqlite":
        for trigger in TRIGGERS:
            op.execute(f"CREATE TRIGGER {trigger}")  # nosemgrep: raw-sql-from-a-formatted-string


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in NAMES:
            op.execute(  # nosemgrep: raw-sql-from-a-formatted-string
                f"DROP TRIGGER IF EXISTS {name}"
            )
    op.drop_table("queue_versions")
