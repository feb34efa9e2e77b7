"""The dashboard's desk pages: the on-duty roster (who is paged for P0), the outbound webhooks
with their delivery log and replay, and the audit trail. Each form calls the desk API's own
handler, so the rules, the tenancy (another organisation's ids: 404) and the audit entries are
the API's; this module only checks the session, its CSRF token and the scope first."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api import audit_view, labels
from api.dashboard import Text, Viewer, checked, reader, to
from api.deps import NowDep, SessionDep, VaultDep
from api.errors import N_, ApiError, locale_of
from api.pages import NOTICES, actor_names, render
from api.routes import audit as audit_api
from api.routes import responders
from api.routes import webhooks as webhooks_api
from core.models import OutboxState, Responder, Role

router = APIRouter(include_in_schema=False)

RECENT = 20  # deliveries per endpoint on the page (the API's log goes back further)
GIVEN_UP = 100  # dead letters per endpoint, each replayable
AUDIT_PAGE = 100
OVERLAP_DAYS = (0, 1, 7)  # how long an old secret keeps signing (the API allows 0-168 h)

ROLES = labels.ROLES
DELIVERY_STATES = {
    "pending": N_("Waiting"),
    "sending": N_("Sending"),
    "delivered": N_("Delivered"),
    "failed": N_("Failed"),
    "dead": N_("Given up"),
}
BAD_URL = N_("A webhook URL starts with https://.")
PRIVATE_URL = N_("A webhook URL must name a public address, not a private or local one.")
DESK_NOTICES = {
    **NOTICES,
    "replayed": N_("The delivery is queued again, with the same event id."),
    "not_dead": N_("Only a delivery that was given up on can be replayed."),
    "paused": N_(
        "Deliveries to the endpoint are paused: its events are held and go out when you"
        " resume. Events held for over 7 days are given up, and can still be replayed."
    ),
    "resumed": N_("Deliveries to the endpoint resumed."),
}


async def _writer(
    request: Request, session: SessionDep, now: NowDep, csrf: str, scope: str | None, back: str
) -> Viewer | Response:
    """The viewer of a form's POST (CSRF checked), or where to send them instead."""
    who = await checked(request, session, now, csrf)
    if who is None:
        return to("/login")
    if who.principal.must_change_password or (scope is not None and not who.may(scope)):
        return to(back + "?notice=forbidden")
    return who


def _reach(roster: responders.Roster) -> str:
    """Which case the roster page explains: "on_duty" (responders on duty are paged),
    "no_chat_on_duty" or "nobody_on_duty" (so everyone with a linked chat is paged instead),
    "group_only" (no responder is paged, the group chat is) or "nobody" (no one is paged)."""
    paged = [r for r in roster.people if r.paged]
    if any(r.on_duty for r in paged):
        return "on_duty"
    if paged:
        return "no_chat_on_duty" if any(r.on_duty for r in roster.people) else "nobody_on_duty"
    return "group_only" if roster.group else "nobody"


@router.get("/roster")
async def roster_page(
    request: Request, session: SessionDep, now: NowDep, notice: str | None = None
) -> Response:
    """Who a P0 alert pages now (and who is on duty but unreachable), and the form to go on
    or off duty oneself."""
    who = await reader(request, session, now, "alerts:read")
    if isinstance(who, Response):
        return who
    mine = await session.get(Responder, who.principal.responder_id)
    now_paged = await responders.paged_now(session, who.principal.org_id)
    return render(
        request,
        "roster.html",
        me=who,
        roster=now_paged.people,
        group=now_paged.group,
        reach=_reach(now_paged),
        on_duty=mine is not None and mine.on_duty,
        pageable=who.principal.role is not Role.observer,  # as PUT /roster/me decides
        roles=ROLES,
        notice=DESK_NOTICES.get(notice or ""),
    )


@router.post("/roster/me")
async def duty_form(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    duty: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    # PUT /roster/me needs no scope: it refuses observers (never paged) by itself.
    who = await _writer(request, session, now, csrf, None, "/roster")
    if isinstance(who, Response):
        return who
    if duty not in ("on", "off"):
        return to("/roster")
    body = responders.DutyIn(on_duty=duty == "on")
    try:
        await responders.set_my_duty(body, who.principal, session, vault, now)
    except ApiError:
        return to("/roster?notice=forbidden")
    return to("/roster")


async def webhooks_page(
    request: Request,
    session: SessionDep,
    who: Viewer,
    *,
    status: int = 200,
    secret: webhooks_api.NewSecret | None = None,
    notice: str | None = None,
) -> Response:
    hooks = []
    for hook in await webhooks_api.list_webhooks(who.principal, session):
        dead = await webhooks_api.deliveries(
            hook.id, who.principal, session, OutboxState.dead, GIVEN_UP
        )
        recent = await webhooks_api.deliveries(hook.id, who.principal, session, None, RECENT)
        hooks.append((hook, dead, recent))
    return render(
        request,
        "webhooks.html",
        status,
        me=who,
        hooks=hooks,
        secret=secret,
        days=OVERLAP_DAYS,
        states=DELIVERY_STATES,
        notice=notice,
    )


@router.get("/webhooks")
async def webhooks_list(
    request: Request, session: SessionDep, now: NowDep, notice: str | None = None
) -> Response:
    """The organisation's endpoints, each with what was given up on and its recent log."""
    who = await reader(request, session, now, "org:admin")
    if isinstance(who, Response):
        return who
    return await webhooks_page(request, session, who, notice=DESK_NOTICES.get(notice or ""))


@router.post("/webhooks")
async def add_webhook(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    url: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """A new endpoint; its signing secret is on this answer only (not kept, not in a URL)."""
    who = await _writer(request, session, now, csrf, "org:admin", "/webhooks")
    if isinstance(who, Response):
        return who
    try:
        body = webhooks_api.WebhookIn(url=url.strip())
        made = await webhooks_api.add_webhook(body, request, who.principal, session, vault, now)
    except (ValidationError, ApiError) as exc:
        private = isinstance(exc, ApiError) and exc.message == webhooks_api.PRIVATE_URL
        notice = PRIVATE_URL if private else BAD_URL
        return await webhooks_page(request, session, who, status=400, notice=notice)
    return await webhooks_page(request, session, who, secret=made)


@router.post("/webhooks/{hook_id}/rotate")
async def rotate_secret(
    hook_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    days: Annotated[int, Form(ge=0, le=7)] = 1,
) -> Response:
    """A new signing secret, shown once; the old one signs too for ``days``."""
    who = await _writer(request, session, now, csrf, "org:admin", "/webhooks")
    if isinstance(who, Response):
        return who
    body = webhooks_api.RotateIn(overlap_hours=days * 24)
    try:
        made = await webhooks_api.rotate_secret(hook_id, body, who.principal, session, vault, now)
    except ApiError:
        return render(request, "missing.html", 404, me=who)
    return await webhooks_page(request, session, who, secret=made)


@router.post("/webhooks/{hook_id}/deliveries/{delivery_id}/replay")
async def replay(
    hook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
) -> Response:
    """Send a dead delivery again, with the same event id."""
    who = await _writer(request, session, now, csrf, "org:admin", "/webhooks")
    if isinstance(who, Response):
        return who
    try:
        await webhooks_api.replay(hook_id, delivery_id, who.principal, session, vault, now)
    except ApiError as exc:
        if exc.status == 404:
            return render(request, "missing.html", 404, me=who)
        return to("/webhooks?notice=not_dead")
    return to("/webhooks?notice=replayed")


@router.post("/webhooks/{hook_id}/{action}")
async def pause_or_resume(
    hook_id: uuid.UUID,
    action: str,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
) -> Response:
    who = await _writer(request, session, now, csrf, "org:admin", "/webhooks")
    if isinstance(who, Response):
        return who
    if action not in ("pause", "resume"):
        return render(request, "missing.html", 404, me=who)
    body = webhooks_api.WebhookPatch(active=action == "resume")
    try:
        await webhooks_api.update_webhook(
            hook_id, body, request, who.principal, session, vault, now
        )
    except ApiError:
        return render(request, "missing.html", 404, me=who)
    return to(f"/webhooks?notice={'resumed' if body.active else 'paused'}")


@router.get("/audit")
async def audit_page(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    verify: bool = False,
) -> Response:
    """The organisation's audit trail, newest first; ``verify`` walks the whole hash chain."""
    who = await reader(request, session, now, "org:admin")
    if isinstance(who, Response):
        return who
    entries = await audit_api.list_entries(who.principal, session, before, AUDIT_PAGE)
    verdict = await audit_api.verify(who.principal, session, vault) if verify else None
    org_id = who.principal.org_id
    names = await audit_view.staff(session, org_id)
    found = await audit_view.known(session, org_id, entries.items, names)
    shown = audit_view.rows(entries.items, found, locale_of(request), actor_names(request, names))
    return render(
        request,
        "audit.html",
        me=who,
        entries=shown,
        more=entries.next_cursor,
        verdict=verdict,
    )
