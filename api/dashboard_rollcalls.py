"""The dashboard's broadcasts and roll-calls: the latest of each with their counts, a form to
send a broadcast and one to start a roll-call, one roll-call's answers by defender handle, and
closing it early. Each form calls the desk API's own handler (api/routes/broadcasts.py,
api/routes/rollcalls.py), so the rules, the tenancy (another organisation's roll-call: 404)
and the audit entries are the API's; this module checks the session, its CSRF token and the
scope first (``broadcasts:read`` to see, ``broadcasts:write`` to send, start or close).
Sending or starting is asked once more first (``confirm``): how many defenders it reaches,
the message, and that it cannot be taken back; a way back keeps the message to edit."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api import audit_view
from api.dashboard import Text, Viewer, checked, reader, to
from api.deps import NowDep, SessionDep, VaultDep
from api.errors import N_, ApiError
from api.pages import NOTICES, actor_names, render
from api.routes import broadcasts as broadcasts_api
from api.routes import rollcalls as rollcalls_api
from core import broadcast_chunks, broadcasts, desk_alerts, desk_defenders, rollcalls

router = APIRouter(include_in_schema=False)

READ, WRITE = "broadcasts:read", "broadcasts:write"
# The text's own limit is the API's (core.broadcasts.MAX_TEXT): a longer one gets BAD_TEXT.
Message = Annotated[str, Form(max_length=4 * broadcasts.MAX_TEXT)]
Minutes = Annotated[str, Form(max_length=12)]
Step = Annotated[str, Form(max_length=8)]  # "send": confirmed; "edit": back to the form

BAD_TEXT = N_("Write the message to send: up to 2000 characters.")
BAD_MINUTES = N_("A roll-call closes in 1 to 1440 minutes (24 hours).")
ROLLCALL_NOTICES = {
    **NOTICES,
    "sent": N_("The broadcast is queued for every enrolled defender."),
    "started": N_("The roll-call is sent to every enrolled defender."),
    "closed": N_("You closed the roll-call: later answers are no longer recorded."),
    "not_open": N_("The roll-call was already closed."),
}
ANSWERS = {rollcalls.SAFE: N_("Safe"), rollcalls.HELP: N_("Needs help")}


async def names_of(session: SessionDep, who: Viewer) -> dict[uuid.UUID, str]:
    """The organisation's responders by id, to name who sent what."""
    return await audit_view.staff(session, who.principal.org_id)


async def page(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    who: Viewer,
    *,
    status: int = 200,
    notice: str | None = None,
    text: str = "",
    minutes: str = "60",
    form: str | None = None,
) -> Response:
    """The page, with what a refused form held (``form``: which one) filled in again."""
    # The latest page of each (the API's own), without its next cursor: this page does not page.
    sent = await broadcasts_api.list_broadcasts(who.principal, session, vault, Response())
    calls = await rollcalls_api.list_rollcalls(who.principal, session, vault, now, Response())
    name = actor_names(request, await names_of(session, who))
    return render(
        request,
        "broadcasts.html",
        status,
        me=who,
        broadcasts=[(b, name(b.sent_by)) for b in sent],
        rollcalls=[(r, name(r.sent_by)) for r in calls],
        max_text=broadcasts.MAX_TEXT,
        max_minutes=rollcalls.MAX_MINUTES,
        text=text,
        minutes=minutes,
        form=form,
        notice=notice,
    )


@router.get("/broadcasts")
async def broadcasts_page(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    notice: str | None = None,
) -> Response:
    """The latest roll-calls and broadcasts, newest first, with how they fared."""
    who = await reader(request, session, now, READ)
    if isinstance(who, Response):
        return who
    return await page(request, session, vault, now, who, notice=ROLLCALL_NOTICES.get(notice or ""))


async def _writer(
    request: Request, session: SessionDep, now: NowDep, csrf: str, back: str
) -> Viewer | Response:
    """The viewer of a form that sends or closes (CSRF checked), or where to send them."""
    who = await checked(request, session, now, csrf)
    if who is None:
        return to("/login")
    if who.principal.must_change_password or not who.may(WRITE):
        return to(back + "?notice=forbidden")
    return who


@router.post("/broadcasts")
async def send_broadcast(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    text: Message = "",
    step: Step = "",
) -> Response:
    """One message to every enrolled defender, in their language, at the lowest priority."""
    who = await _writer(request, session, now, csrf, "/broadcasts")
    if isinstance(who, Response):
        return who
    try:
        body = broadcasts_api.BroadcastIn(text=text)
    except ValidationError:
        return await page(
            request,
            session,
            vault,
            now,
            who,
            status=400,
            notice=BAD_TEXT,
            text=text,
            form="broadcast",
        )
    if step == "edit":
        return await page(request, session, vault, now, who, text=text, form="broadcast")
    if step != "send":
        return await confirm(request, session, who, "/broadcasts", text=text)
    await broadcasts_api.send_broadcast(body, who.principal, session, vault, now)
    return to("/broadcasts?notice=sent")


@router.post("/rollcalls")
async def start_rollcall(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    text: Message = "",
    minutes: Minutes = "",
    step: Step = "",
) -> Response:
    """Ask every enrolled defender "I'm safe" or "I need help" until the roll-call closes."""
    who = await _writer(request, session, now, csrf, "/broadcasts")
    if isinstance(who, Response):
        return who
    try:
        body = rollcalls_api.RollCallIn.model_validate(
            {"text": text, "closes_in_minutes": minutes.strip()}
        )
    except ValidationError as exc:
        wrong = BAD_TEXT if any(e["loc"] == ("text",) for e in exc.errors()) else BAD_MINUTES
        return await page(
            request,
            session,
            vault,
            now,
            who,
            status=400,
            notice=wrong,
            text=text,
            minutes=minutes,
            form="rollcall",
        )
    if step == "edit":
        return await page(
            request, session, vault, now, who, text=text, minutes=minutes, form="rollcall"
        )
    if step != "send":
        return await confirm(request, session, who, "/rollcalls", text=text, minutes=minutes)
    started = await rollcalls_api.start_rollcall(body, who.principal, session, vault, now)
    return to(f"/rollcalls/{started.id}?notice=started")


async def confirm(
    request: Request,
    session: SessionDep,
    who: Viewer,
    action: str,
    *,
    text: str,
    minutes: str | None = None,
) -> Response:
    """Asked once more before it goes: nothing sent can be taken back from the phones."""
    reach = await broadcast_chunks.reach_count(session, who.principal.org_id)
    return render(
        request,
        "confirm_send.html",
        me=who,
        action=action,
        text=text,
        minutes=None if minutes is None else int(minutes.strip()),
        reach=reach,
    )


@router.get("/rollcalls/{rollcall_id}")
async def rollcall_page(
    rollcall_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    notice: str | None = None,
) -> Response:
    """One roll-call: its counts and each recipient's answer by handle."""
    who = await reader(request, session, now, READ)
    if isinstance(who, Response):
        return who
    try:
        found = await rollcalls_api.get_rollcall(rollcall_id, who.principal, session, vault, now)
    except ApiError:  # unknown, a plain broadcast, or another organisation's (R18)
        return render(request, "missing.html", 404, me=who)
    return render(
        request,
        "rollcall.html",
        me=who,
        rollcall=found,
        sent_by=actor_names(request, await names_of(session, who))(found.sent_by),
        answers=ANSWERS,
        # "I'm safe" with the duress PIN counts as help: the desk must not call that phone.
        careful=await desk_alerts.handles_not_to_contact(session, who.principal.org_id),
        pages=await desk_defenders.ids_by_handle(
            session, who.principal.org_id, [a.handle for a in found.answers]
        )
        if who.may("defenders:read")
        else {},
        notice=ROLLCALL_NOTICES.get(notice or ""),
    )


@router.post("/rollcalls/{rollcall_id}/close")
async def close_rollcall(
    rollcall_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
) -> Response:
    """Close a roll-call before its time; its webhooks get the final counts."""
    back = f"/rollcalls/{rollcall_id}"
    who = await _writer(request, session, now, csrf, back)
    if isinstance(who, Response):
        return who
    try:
        await rollcalls_api.close_rollcall(rollcall_id, who.principal, session, vault, now)
    except ApiError as exc:
        if exc.status == 404:
            return render(request, "missing.html", 404, me=who)
        return to(back + "?notice=not_open")
    return to(back + "?notice=closed")
