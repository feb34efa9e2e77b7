"""Incident report intake: every narrative, place and file is sealed the moment it arrives.

The server keeps sealed parts (base64) while the defender answers the next questions and
files them inside the report's sealed body at the end, so the desk opens the body, then each
part (kind ``report.part``, same record id) and each evidence file (kind ``report.evidence``,
its own id). Triage fields (type of act, urgency, country, date) are encrypted for the server.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import webhook_events, webhooks
from core.crypto import Vault, seal
from core.desk_reports import SEALED_KIND, TRIAGE_KEYS
from core.media import MAX_BYTES, examine
from core.messages import InboundAttachment
from core.models import Defender, Evidence, Organisation, Report
from core.outbox import enqueue_many
from core.security import generate_code
from core.text import file_name

PART_KIND = "report.part"
EVIDENCE_KIND = "report.evidence"


class NoOrgKey(Exception):
    """The organisation has no public key yet: nothing can be sealed, so nothing is taken."""


async def org_key(session: AsyncSession, org_id: uuid.UUID) -> bytes:
    key = (
        await session.execute(select(Organisation.public_key).where(Organisation.id == org_id))
    ).scalar_one_or_none()
    if key is None:
        raise NoOrgKey(str(org_id))
    return key


async def seal_part(
    session: AsyncSession, *, defender: Defender, report_id: uuid.UUID, body: Any
) -> str:
    public = await org_key(session, defender.org_id)
    sealed = seal(public, org_id=defender.org_id, record_id=report_id, kind=PART_KIND, body=body)
    return base64.b64encode(sealed).decode()


async def add_evidence(
    session: AsyncSession,
    *,
    defender: Defender,
    report_id: uuid.UUID,
    attachment: InboundAttachment,
    now: datetime,
) -> Evidence | None:
    """Hash, sniff and seal one file (with a metadata-free preview for images); None if the
    channel could not fetch it or it is over the size limit."""
    data = attachment.data
    if data is None or len(data) > MAX_BYTES:
        return None
    public = await org_key(session, defender.org_id)
    found = await examine(data)  # hashed as received; decoded off the event loop
    row = Evidence(
        id=uuid.uuid4(), org_id=defender.org_id, defender_id=defender.id, report_id=report_id
    )
    body = {
        "report": str(report_id),
        "sha256": found.sha256,
        "size": found.size,
        "content_type": found.content_type,
        "declared_type": attachment.content_type,
        "kind": attachment.kind,
        "filename": file_name(attachment.filename),  # as sent, but never U+202E or NUL
        "received_at": now.isoformat(),
        "original": base64.b64encode(data).decode(),
        "preview": base64.b64encode(found.preview).decode() if found.preview else None,
    }
    row.sealed = seal(
        public, org_id=defender.org_id, record_id=row.id, kind=EVIDENCE_KIND, body=body
    )
    row.created_at = now
    session.add(row)
    return row


async def receipt_code(session: AsyncSession) -> str:
    while True:
        code = generate_code(6)
        if not (
            await session.execute(select(Report.id).where(Report.receipt_code == code))
        ).first():
            return code


async def file(
    session: AsyncSession,
    vault: Vault,
    *,
    defender: Defender,
    report_id: uuid.UUID,
    triage: dict[str, Any],
    body: dict[str, Any],
    now: datetime,
) -> Report:
    """The report, sealed to the organisation key, its evidence marked as filed, and a
    ``report.filed`` event queued for each of the organisation's webhooks."""
    public = await org_key(session, defender.org_id)
    evidence = list(
        (
            await session.execute(select(Evidence.id).where(Evidence.report_id == report_id))
        ).scalars()
    )
    body = {**body, "evidence": [str(e) for e in evidence], "filed_at": now.isoformat()}
    report = Report(
        id=report_id,
        org_id=defender.org_id,
        defender_id=defender.id,
        receipt_code=await receipt_code(session),
        created_at=now,
    )
    report.sealed_body = seal(
        public, org_id=defender.org_id, record_id=report_id, kind=SEALED_KIND, body=body
    )
    clean = {k: v for k, v in triage.items() if k in TRIAGE_KEYS}
    report.put(vault, "triage_enc", json.dumps(clean))
    session.add(report)
    await session.execute(
        update(Evidence).where(Evidence.report_id == report_id).values(filed_at=now)
    )
    # The desk's webhooks hear of it in this transaction: ids and times, nothing written.
    hooks = await webhooks.endpoints(session, defender.org_id)
    items = webhook_events.report_items(report, hooks, handle=defender.handle)
    await enqueue_many(session, vault, items, now=now)
    return report


async def purge_drafts(
    session: AsyncSession, *, before: datetime, keep: Select[Any] | None = None
) -> None:
    """Evidence of reports never sent (abandoned, expired or discarded), older than ``before``;
    ``keep`` selects defenders still writing theirs, whose files stay however old they are
    (a report sent over days, a file every few hours, must not lose its first ones)."""
    stmt = delete(Evidence).where(Evidence.filed_at.is_(None), Evidence.created_at < before)
    if keep is not None:
        stmt = stmt.where(Evidence.defender_id.is_(None) | Evidence.defender_id.not_in(keep))
    await session.execute(stmt)


async def discard(session: AsyncSession, *, report_id: uuid.UUID) -> None:
    await session.execute(
        delete(Evidence).where(Evidence.report_id == report_id, Evidence.filed_at.is_(None))
    )
