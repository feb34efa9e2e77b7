"""The desk's responder group chat: linking it with a one-time code, its language, unlinking."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from api import errors
from api.deps import AdminDep, NowDep, SessionDep, VaultDep
from api.errors import ApiError
from api.routes.responders import LinkCodeOut
from core import audit, desk_chat, recipients
from core.models import ChannelAddress, DeskGroup

router = APIRouter(prefix="/desk-group", tags=["responders"])

Language = Literal["en", "es", "fr", "pt", "ar"]  # core.i18n.SUPPORTED (a test holds them equal)


class DeskGroupOut(BaseModel):
    channel: str  # "telegram" or "signal"
    language: Language  # of the alerts and notices posted in the group
    language_is_default: bool  # none chosen: the organisation's default (English)
    linked_at: datetime
    # A post failed for good (the bot was removed, the group deleted) at this time: its alerts
    # went to responders' own chats instead. Null once a post arrives, or the group is relinked.
    unreachable_since: datetime | None


class DeskGroupPatch(BaseModel):
    language: Language | None  # null: back to the default


async def _linked(session: AsyncSession, org_id: object) -> DeskGroup:
    row = await session.get(DeskGroup, org_id)
    if row is None:
        raise ApiError(404, errors.NOT_FOUND)
    return row


async def _out(session: AsyncSession, row: DeskGroup) -> DeskGroupOut:
    address = await session.get(ChannelAddress, row.address_id)
    assert address is not None  # the row goes with its address (ON DELETE CASCADE)
    language = cast(Language, recipients.group_locale(row.locale))
    return DeskGroupOut(
        channel=address.channel,
        language=language,
        language_is_default=row.locale is None,
        linked_at=row.created_at,
        unreachable_since=address.blocked_at,
    )


@router.post("/link-code", status_code=201)
async def group_link_code(
    principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> LinkCodeOut:
    """A one-time code (15 minutes): "/desk CODE" sent in a Telegram or Signal group makes it
    the organisation's responder group (replacing any earlier one, whose language it keeps).
    Alerts are posted there, and responders who linked their own chat acknowledge and resolve
    them from it."""
    code, expires_at = await desk_chat.group_code(
        session,
        vault,
        org_id=principal.org_id,
        created_by=principal.responder_id,
        actor=principal.actor,
        now=now,
    )
    return LinkCodeOut(code=code, expires_at=expires_at)


@router.get("", responses={404: {}})
async def get_group(principal: AdminDep, session: SessionDep) -> DeskGroupOut:
    """The linked responder group: its channel, language, when it was linked, and whether
    the bot can still post there."""
    return await _out(session, await _linked(session, principal.org_id))


@router.patch("", responses={404: {}})
async def set_group_language(
    body: DeskGroupPatch, principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> DeskGroupOut:
    """Choose the language of what the engine posts in the group (null: the default)."""
    row = await _linked(session, principal.org_id)
    row.locale = body.language
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="desk_group.language",
        org_id=principal.org_id,
        detail={"language": body.language},
        now=now,
    )
    return await _out(session, row)


@router.delete("", status_code=204, responses={404: {}})
async def unlink_group(
    principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> Response:
    """Stop posting to the responder group, and forget its chat id."""
    if not await desk_chat.unlink_group(
        session, vault, org_id=principal.org_id, actor=principal.actor, now=now
    ):
        raise ApiError(404, errors.NOT_FOUND)
    return Response(status_code=204)
