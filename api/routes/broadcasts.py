"""Broadcasts: one message from the desk to every active defender of the organisation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, StringConstraints

from api import paging
from api.deps import BroadcastsRead, BroadcastsWrite, NowDep, SessionDep, VaultDep
from core import broadcasts
from core.broadcasts import Counts
from core.crypto import Vault
from core.models import Broadcast

router = APIRouter(prefix="/broadcasts", tags=["broadcasts"])

DeskText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=broadcasts.MAX_TEXT)
]


class BroadcastIn(BaseModel):
    text: DeskText


class BroadcastOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    text: str | None  # None once shredded
    sent_by: str
    recipients: int  # the defenders it was queued for
    delivered: int
    failed: int
    pending: int


def out(vault: Vault, b: Broadcast, c: Counts) -> BroadcastOut:
    return BroadcastOut(
        id=b.id,
        created_at=b.created_at,
        text=b.get_text(vault, "text_enc"),
        sent_by=b.sent_by,
        recipients=b.recipients,
        delivered=c.delivered,
        failed=c.failed,
        pending=c.pending,
    )


@router.post("", status_code=201)
async def send_broadcast(
    body: BroadcastIn,
    principal: BroadcastsWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> BroadcastOut:
    """Send a message to every active defender of the organisation, in their language."""
    b = await broadcasts.send(
        session, vault, org_id=principal.org_id, text=body.text, actor=principal.actor, now=now
    )
    return out(vault, b, Counts(pending=b.recipients))


@router.get("", responses=paging.RESPONSES)
async def list_broadcasts(
    principal: BroadcastsRead,
    session: SessionDep,
    vault: VaultDep,
    response: Response,
    cursor: paging.CursorQuery = None,
    limit: paging.LimitQuery = paging.DEFAULT_LIMIT,
) -> list[BroadcastOut]:
    """The organisation's broadcasts, newest first, with how their messages fared. When
    older ones follow, the `Amparo-Next-Cursor` header has the `cursor` of the next page."""
    older = paging.before(cursor)
    found = await broadcasts.recent(session, principal.org_id, before=older, limit=limit + 1)
    found = paging.cut(found, limit, response)
    counts = await broadcasts.counts(session, [b.id for b in found])
    return [out(vault, b, counts.get(b.id, Counts())) for b in found]
