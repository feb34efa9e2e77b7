"""The dashboard's hand-offs between desks (core.handoffs): the page listing the cases offered
to this desk and by it, with accept, decline and withdraw; the offer itself is a form on the
defender's page (api/templates/defender.html) that posts here."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import Text, Viewer, checked, reader, to
from api.deps import NowDep, SessionDep, VaultDep
from api.errors import N_
from api.pages import NOTICES, render
from api.routes.handoffs import REFUSALS
from core import desk_defenders, handoffs

router = APIRouter(include_in_schema=False)

VERDICTS = ("accept", "decline", "withdraw")
# What the page says after a form: done, or why not (the API's words for it).
NOTICES.update(
    {
        "handoff_offered": N_("The case is offered. It moves once that desk accepts it."),
        "handoff_accept": N_("The defender is now followed by this desk."),
        "handoff_decline": N_("You declined the case: it stays with the desk that offered it."),
        "handoff_withdraw": N_("You withdrew the offer."),
    }
    | {f"handoff_{code}": message for code, (_status, message) in REFUSALS.items()}
)


@router.get("/handoffs")
async def handoffs_page(
    request: Request, session: SessionDep, now: NowDep, notice: str | None = None
) -> Response:
    who = await reader(request, session, now, "defenders:read")
    if isinstance(who, Response):
        return who
    incoming, outgoing = await handoffs.listing(session, who.principal.org_id)
    return render(
        request,
        "handoffs.html",
        me=who,
        incoming=incoming,
        outgoing=outgoing,
        notice=NOTICES.get(notice or ""),
    )


async def _admin(
    request: Request, session: SessionDep, now: NowDep, csrf: str, back: str
) -> Viewer | Response:
    """The admin posting a hand-off form, or where to send anyone else (``back``: the page
    the form was on)."""
    who = await checked(request, session, now, csrf)
    if who is None:
        return to("/login")
    if who.principal.must_change_password or not who.may("org:admin"):
        return to(f"{back}?notice=forbidden")
    return who


@router.post("/defenders/{defender_id}/handoff")
async def offer(
    defender_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    to_desk: Text = "",
    agreed: Text = "",
) -> Response:
    back = f"/defenders/{defender_id}"
    who = await _admin(request, session, now, csrf, back)
    if isinstance(who, Response):
        return who
    found = await desk_defenders.get_defender(session, who.principal.org_id, defender_id)
    if found is None:
        return render(request, "missing.html", 404, me=who)
    try:
        await handoffs.offer(
            session,
            vault,
            defender=found,
            to_desk=to_desk,
            agreed=agreed == "yes",
            actor=who.principal.actor,
            now=now,
        )
    except handoffs.HandoffError as exc:
        return to(f"{back}?notice=handoff_{exc.code}")
    return to(f"{back}?notice=handoff_offered")


@router.post("/handoffs/{handoff_id}/{verdict}")
async def decide(
    handoff_id: uuid.UUID,
    verdict: str,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
) -> Response:
    who = await _admin(request, session, now, csrf, "/handoffs")
    if isinstance(who, Response):
        return who
    if verdict not in VERDICTS:
        return render(request, "missing.html", 404, me=who)
    try:
        found = await handoffs.decide(
            session,
            vault,
            org_id=who.principal.org_id,
            handoff_id=handoff_id,
            verdict=verdict,
            actor=who.principal.actor,
            now=now,
        )
    except handoffs.HandoffError as exc:
        return to(f"/handoffs?notice=handoff_{exc.code}")
    if found is None:
        return render(request, "missing.html", 404, me=who)
    return to(f"/handoffs?notice=handoff_{verdict}")
