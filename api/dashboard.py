"""The responders' dashboard at /: log in with a password and TOTP, the alert queue, the
password change; one alert's page and actions are in api/dashboard_alert.py. Server-rendered
forms on the desk API's own sessions, roles, throttles and audit; the only script opens sealed
items (unseal.js)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api import errors
from api.alert_schemas import queue_item
from api.deps import COOKIE, LimitsDep, NowDep, SessionDep, SessionsDep, VaultDep
from api.devices import remember_device
from api.errors import N_, ApiError
from api.pages import NOTICES, render
from api.routes.auth import (
    LOGIN_FAILED,
    WEAK_PASSWORD,
    WRONG_PASSWORD,
    LoginIn,
    guarded_password_change,
    set_cookie,
    sign_in,
)
from core import alerts, audit, desk_alerts, desk_sessions
from core.auth import AuthError, Principal
from core.desk_alerts import Cursor
from core.models import AlertState, Responder

router = APIRouter(include_in_schema=False)

CSRF_COOKIE = "__Host-amparo_csrf"  # the session's CSRF token, echoed in every form
LOGIN_COOKIE = "__Host-amparo_login"  # a pre-login token against login CSRF
MISMATCH = N_("the two new passwords do not match: type the same one twice")
COOKIES_NEEDED = N_("Your browser must accept cookies from this site. Reload the page and retry.")
PAGE = 50
OPEN_PAGE = 200  # open alerts shown at once, most urgent and longest waiting first

Text = Annotated[str, Form(max_length=1024)]


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    csrf: str
    username: str

    def may(self, scope: str) -> bool:
        return scope in self.principal.scopes


async def viewer(
    request: Request,
    session: AsyncSession,
    now: datetime,
    *,
    touch: bool = True,
    hold: bool = False,
) -> Viewer | None:
    """The logged-in responder, from the session cookie and its CSRF twin, or None.
    ``touch=False`` for requests the page makes by itself (see
    core.desk_sessions.session_principal). ``hold``: for a form that writes, also None once the
    responder is disabled (or the session revoked) while the request waited
    (core.desk_sessions.hold)."""
    token, csrf = request.cookies.get(COOKIE), request.cookies.get(CSRF_COOKIE)
    if token is None or csrf is None:
        return None
    found = await desk_sessions.session_principal(session, token, now, touch=touch and not hold)
    if (
        found is None
        or found[0].responder_id is None
        or not desk_sessions.csrf_matches(found[1], csrf)
    ):
        return None
    if hold and not await desk_sessions.hold(session, found[0], found[1], now, admins=False):
        return None
    username = await session.scalar(
        select(Responder.username).where(Responder.id == found[0].responder_id)
    )
    return Viewer(found[0], csrf, username or "")


def to(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def reader(
    request: Request, session: AsyncSession, now: datetime, scope: str
) -> Viewer | Response:
    """The viewer of a page that needs ``scope``, or where to send them instead."""
    who = await viewer(request, session, now)
    if who is None:
        return to("/login")
    if who.principal.must_change_password or not who.may(scope):
        return to("/password" if who.principal.must_change_password else "/")
    return who


def keep(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def forget(response: Response, *names: str) -> None:
    for name in names:
        response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def signed_in(response: Response, token: str, csrf: str) -> Response:
    set_cookie(response, token)
    keep(response, CSRF_COOKIE, csrf, int(desk_sessions.SESSION_ABSOLUTE.total_seconds()))
    forget(response, LOGIN_COOKIE)
    return response


def login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    nonce = secrets.token_urlsafe(32)
    response = render(request, "login.html", status, nonce=nonce, error=error, me=None)
    keep(response, LOGIN_COOKIE, nonce, 3600)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return login_page(request)


@router.post("/login")
async def login(
    request: Request,
    sessions: SessionsDep,
    vault: VaultDep,
    now: NowDep,
    limits: LimitsDep,
    username: Annotated[str, Form(max_length=120)] = "",
    password: Text = "",
    totp: Annotated[str, Form(max_length=12)] = "",
    nonce: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    presented = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not secrets.compare_digest(nonce.encode(), presented.encode()):
        return login_page(request, 400, COOKIES_NEEDED)
    try:
        body = LoginIn(username=username, password=password, totp=totp)
        responder, token, csrf = await sign_in(request, sessions, vault, now, limits, body)
    except ValidationError:
        return login_page(request, 401, errors.translated(request, LOGIN_FAILED))
    except ApiError as exc:
        return login_page(request, exc.status, errors.translated(request, exc.message))
    response = signed_in(to("/password" if responder.must_change_password else "/"), token, csrf)
    remember_device(response, vault, responder, now)
    return response


async def checked(
    request: Request, session: AsyncSession, now: datetime, csrf: str
) -> Viewer | None:
    """The viewer of a form's POST, only when the form carries this session's CSRF token."""
    who = await viewer(request, session, now, hold=True)
    if who is None or not secrets.compare_digest(csrf.encode(), who.csrf.encode()):
        return None
    return who


@router.post("/logout")
async def logout(request: Request, session: SessionDep, vault: VaultDep, now: NowDep) -> Response:
    # The session the cookie names ends, whatever the form's token: a page left open from an
    # earlier login holds a stale one, and "Log out" must never only look done (R20). A
    # forged logout could do no more, and SameSite=Strict keeps other sites' forms out.
    who = await viewer(request, session, now)
    if who is not None:
        p = who.principal
        assert p.responder_id is not None and p.session_id is not None
        await desk_sessions.revoke_sessions(session, p.responder_id, now, only=p.session_id)
        await audit.record(
            session,
            vault,
            actor=p.actor,
            action="auth.logout",
            target=str(p.session_id),
            org_id=p.org_id,
            now=now,
        )
    response = to("/login")
    forget(response, COOKIE, CSRF_COOKIE)
    return response


@router.get("/")
async def queue(
    request: Request,
    session: SessionDep,
    now: NowDep,
    state: AlertState | None = None,
    cursor: str | None = None,
    notice: str | None = None,
    auto: bool = False,
) -> Response:
    """Open alerts (waiting, then acknowledged), or one state's pages. The open alerts refresh
    themselves every 30 s (``auto``); that alone does not keep an unattended session alive."""
    who = await viewer(request, session, now, touch=not auto)
    if who is None:
        return to("/login")
    if who.principal.must_change_password:
        return to("/password")
    if not who.may("alerts:read"):
        return to("/reports")
    try:
        after = None if cursor is None else Cursor.decode(cursor)
    except ValueError:
        after = None
    states = [state] if state is not None else [AlertState.triggered, AlertState.acknowledged]
    sections = []
    for s in states:
        limit = PAGE if state is not None else OPEN_PAGE
        rows, following = await desk_alerts.list_alerts(
            session, org_id=who.principal.org_id, state=s, after=after, limit=limit
        )
        more = None if following is None else following.encode()
        items = [queue_item(r) for r in rows]
        if state is None:  # in a storm the oldest P0 must not sink below newer ones
            urgent, _more = await desk_alerts.list_alerts(
                session, org_id=who.principal.org_id, state=s, priority=0, limit=OPEN_PAGE
            )  # nor fall off the page: every waiting P0 is on it, however many came after
            shown = {a["id"] for a in items}
            items += [a for a in map(queue_item, urgent) if a["id"] not in shown]
            items.sort(key=lambda a: (a["priority"], a["triggered_at"]))
            # Every open alert of a defender under duress says so, not only the duress one.
            ids = {uuid.UUID(a["defender_id"]) for a in items if a["defender_id"]}
            careful = {
                str(d)
                for d in await alerts.not_to_contact(session, ids, org_id=who.principal.org_id)
            }
            for a in items:
                a["do_not_contact"] = a["do_not_contact"] or a["defender_id"] in careful
        sections.append((s.value, items, more))
    return render(
        request,
        "queue.html",
        me=who,
        sections=sections,
        filtered=state is not None,
        notice=NOTICES.get(notice or ""),
        refresh=None if state is not None else "30; url=/?auto=1",
    )


@router.get("/password")
async def password_form(request: Request, session: SessionDep, now: NowDep) -> Response:
    who = await viewer(request, session, now)
    if who is None:
        return to("/login")
    return render(request, "password.html", me=who, error=None)


@router.post("/password")
async def change_password(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    limits: LimitsDep,
    sessions: SessionsDep,
    csrf: Text = "",
    current: Text = "",
    new: Text = "",
    again: Text = "",
) -> Response:
    """Every session ends with a password change; this browser gets a new one. Wrong current
    passwords count against the login throttles: a stolen session cannot guess it. The new
    password is typed twice: a mismatch changes nothing (and guesses nothing)."""
    who = await checked(request, session, now, csrf)
    if who is None:
        return to("/login")
    if new != again:
        message = errors.translated(request, MISMATCH)
        return render(request, "password.html", 400, me=who, error=message)
    responder = await session.get(Responder, who.principal.responder_id)
    assert responder is not None
    try:
        await guarded_password_change(
            request, session, sessions, vault, limits, responder, current, new, now
        )
    except ApiError:  # throttled
        message = errors.translated(request, errors.TOO_MANY)
        return render(request, "password.html", 429, me=who, error=message)
    except AuthError as exc:
        error = WRONG_PASSWORD if exc.code == "password" else WEAK_PASSWORD
        message = errors.translated(request, error)
        return render(request, "password.html", 400, me=who, error=message)
    _row, token, csrf = await desk_sessions.open_session(session, responder, now)
    response = signed_in(to("/?notice=password"), token, csrf)
    remember_device(response, vault, responder, now)  # the old one died with the password
    return response
