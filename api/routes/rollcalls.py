"""Roll-calls: "everyone check in now", with "I'm safe" / "I need help" answers."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from api import errors, paging
from api.deps import BroadcastsRead, BroadcastsWrite, NowDep, SessionDep, VaultDep
from api.errors import ApiError
from api.routes.broadcasts import DeskText
from core import broadcasts, rollcall_closing, rollcalls
from core.broadcasts import Counts
from core.crypto import Vault
from core.models import Broadcast

router = APIRouter(prefix="/rollcalls", tags=["rollcalls"])


class RollCallIn(BaseModel):
    text: DeskText
    closes_in_minutes: Annotated[int, Field(ge=1, le=rollcalls.MAX_MINUTES)]


class AnswerOut(BaseModel):
    handle: str  # the defender's generated handle, never a name or an address
    answer: str | None  # "safe", "help", or None: not answered
    answered_at: datetime | None


class RollCallOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    text: str | None
    sent_by: str
    closes_at: datetime
    closed_at: datetime | None
    open: bool
    recipients: int
    safe: int
    help: int
    unanswered: int
    delivered: int
    failed: int
    pending: int


class RollCallDetail(RollCallOut):
    answers: list[AnswerOut]


async def out(session: AsyncSession, vault: Vault, r: Broadcast, now: datetime) -> RollCallOut:
    return (await outs(session, vault, [r], now))[0]


async def outs(
    session: AsyncSession, vault: Vault, found: list[Broadcast], now: datetime
) -> list[RollCallOut]:
    """The roll-calls with their counts: two grouped queries, however many there are."""
    ids = [r.id for r in found]
    tallies = await rollcalls.tallies(session, ids)
    counts = await broadcasts.counts(session, ids)
    return [summary(vault, r, tallies[r.id], counts.get(r.id, Counts()), now) for r in found]


def summary(
    vault: Vault, r: Broadcast, tally: rollcalls.Tally, counts: Counts, now: datetime
) -> RollCallOut:
    assert r.closes_at is not None
    return RollCallOut(
        id=r.id,
        created_at=r.created_at,
        text=r.get_text(vault, "text_enc"),
        sent_by=r.sent_by,
        closes_at=r.closes_at,
        closed_at=r.closed_at,
        open=rollcalls.is_open(r, now),
        recipients=r.recipients,
        safe=tally.safe,
        help=tally.help,
        unanswered=tally.unanswered,
        delivered=counts.delivered,
        failed=counts.failed,
        pending=counts.pending,
    )


@router.post("", status_code=201)
async def start_rollcall(
    body: RollCallIn, principal: BroadcastsWrite, session: SessionDep, vault: VaultDep, now: NowDep
) -> RollCallOut:
    """Ask every active defender of the organisation to answer "I'm safe" or "I need help"."""
    r = await rollcalls.start(
        session,
        vault,
        org_id=principal.org_id,
        text=body.text,
        closes_in=timedelta(minutes=body.closes_in_minutes),
        actor=principal.actor,
        now=now,
    )
    return await out(session, vault, r, now)


@router.get("", responses=paging.RESPONSES)
async def list_rollcalls(
    principal: BroadcastsRead,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    response: Response,
    cursor: paging.CursorQuery = None,
    limit: paging.LimitQuery = paging.DEFAULT_LIMIT,
) -> list[RollCallOut]:
    """The organisation's roll-calls, newest first, with their counts. When older ones
    follow, the `Amparo-Next-Cursor` header has the `cursor` of the next page."""
    older = paging.before(cursor)
    found = await broadcasts.recent(
        session, principal.org_id, rollcalls=True, before=older, limit=limit + 1
    )
    return await outs(session, vault, paging.cut(found, limit, response), now)


@router.get("/{rollcall_id}", responses={404: {}})
async def get_rollcall(
    rollcall_id: uuid.UUID,
    principal: BroadcastsRead,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> RollCallDetail:
    """A roll-call's counts and each recipient's answer by handle, unanswered ones included."""
    r = await rollcalls.get(session, principal.org_id, rollcall_id)
    if r is None:
        raise ApiError(404, errors.NOT_FOUND)
    lines = await rollcalls.answers(session, r.id)
    summary = await out(session, vault, r, now)
    return RollCallDetail(
        **summary.model_dump(),
        answers=[
            AnswerOut(handle=x.handle, answer=x.answer, answered_at=x.answered_at) for x in lines
        ],
    )


@router.post("/{rollcall_id}/close", responses={404: {}, 409: {}})
async def close_rollcall(
    rollcall_id: uuid.UUID,
    principal: BroadcastsWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> RollCallOut:
    """Close a roll-call before its time; answers after it are no longer recorded."""
    r = await rollcalls.get(session, principal.org_id, rollcall_id)
    if r is None:
        raise ApiError(404, errors.NOT_FOUND)
    closed = await rollcall_closing.close(
        session, vault, rollcall_id=r.id, now=now, actor=principal.actor
    )
    if not closed:
        raise ApiError(409, errors.CONFLICT)
    return await out(session, vault, r, now)
