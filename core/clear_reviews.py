"""Desk reviews still in clear: written before migration 0010, when the verification, the
confirmed act codes and the intervention lived in ``report_reviews``' own columns. Migrations
hold no keys, so the command that migrates (``amparo db upgrade``; ``amparo serve`` on the
embedded SQLite database: amparo.runtime) encrypts them afterwards with the report's key, as
``core.desk_reports.review`` does when one is changed, and empties the clear columns. Running
it again finds nothing to do."""

from __future__ import annotations

import json
import logging
import uuid

from sqlalchemy import Text, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.claims import locked, write_lock
from core.crypto import Vault
from core.db import transaction
from core.desk_reports import REVIEW_KEYS, UNREVIEWED, review_fields
from core.models import Report, ReportReview

BATCH = 100
log = logging.getLogger("amparo.migrate")


def in_clear(row: ReportReview) -> bool:
    return any(getattr(row, k) not in (v, None, []) for k, v in UNREVIEWED.items())


# ``in_clear`` as SQL, loosely (a row it takes that is not in clear is left by ``in_clear``):
# this runs at every start of ``amparo serve`` on SQLite, and must not read every review.
_MAYBE_CLEAR = or_(
    ReportReview.verification != UNREVIEWED["verification"],
    ReportReview.intervention_type.is_not(None),
    ReportReview.intervention_status.is_not(None),
    cast(ReportReview.act_codes, Text).not_in(["[]"]),
)


async def encrypt_clear_reviews(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> int:
    """Encrypt every review left in clear; how many there were."""
    async with sessions() as s:
        rows = (await s.execute(select(ReportReview).where(_MAYBE_CLEAR))).scalars()
        waiting = [r.report_id for r in rows if in_clear(r)]
    for start in range(0, len(waiting), BATCH):
        async with transaction(sessions) as s:
            for report_id in waiting[start : start + BATCH]:
                await _encrypt(s, vault, report_id)
    if waiting:
        log.info("old report reviews encrypted", extra={"count": len(waiting)})
    return len(waiting)


async def _encrypt(session: AsyncSession, vault: Vault, report_id: uuid.UUID) -> None:
    """One review, under the report's lock (as a desk change takes it): a change made since
    it was found has already encrypted it and emptied its columns."""
    await write_lock(session)
    mine = select(Report).where(Report.id == report_id).execution_options(populate_existing=True)
    report = (await session.execute(locked(mine, session, key_share=True))).scalar_one_or_none()
    row = await session.get(ReportReview, report_id, populate_existing=True)
    if report is None or row is None or not in_clear(row):
        return
    if report.review_enc is None:  # else the encrypted review is the one read: these are stale
        fields = review_fields(vault, report, row)
        report.put(vault, "review_enc", json.dumps({k: fields[k] for k in REVIEW_KEYS}))
    for key, value in UNREVIEWED.items():
        setattr(row, key, [] if key == "act_codes" else value)
