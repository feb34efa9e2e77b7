"""the desk's review of a report, encrypted with the report's own key

The verification, confirmed HURIDOCS act codes and intervention of a report were stored in
clear in report_reviews: a confirmed act code names the type of act that the report's triage
keeps encrypted. They now live in reports.review_enc (core.desk_reports.review_fields); the
clear columns stay for reviews written before, and are emptied when one is next changed.

Revision ID: 0010_report_review_enc
Revises: 0009_queue_filter_indexes
Create Date: 2026-12-07 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_report_review_enc"
down_revision: str | None = "0009_queue_filter_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_enc", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_column("review_enc")
