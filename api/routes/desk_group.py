"""The desk's responder group chat: linking it with a one-time code, and unlinking it."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api import errors
from api.deps import AdminDep, NowDep, SessionDep, VaultDep
from api.errors import ApiError
from api.routes.responders import LinkCodeOut
from core import desk_chat

router = APIRouter(prefix="/desk-group", tags=["responders"])


@router.post("/link-code", status_code=201)
async def group_link_code(
    principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> LinkCodeOut:
    """A one-time code (15 minutes): "/desk CODE" sent in a Telegram or Signal group makes it
    the organisation's responder group (replacing any earlier one). Alerts are posted there,
    and responders who linked their own chat acknowledge and resolve them from it."""
    code, expires_at = await desk_chat.group_code(
        session,
        vault,
        org_id=principal.org_id,
        created_by=principal.responder_id,
        actor=principal.actor,
        now=now,
    )
    return LinkCodeOut(code=code, expires_at=expires_at)


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
