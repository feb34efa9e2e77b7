"""Logging in and out, and changing one's password."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import errors
from api.deps import (
    COOKIE,
    AnyPrincipalDep,
    LimitsDep,
    NowDep,
    SessionDep,
    SessionsDep,
    VaultDep,
    client_address,
)
from api.devices import presented_device, remember_device
from api.errors import N_, ApiError
from core import audit, auth, desk_sessions
from core.auth import AuthError
from core.crypto import Vault, normalise
from core.db import transaction
from core.models import Responder, Role
from core.throttle import Keyed, Limits, hit_each

router = APIRouter(prefix="/auth", tags=["auth"])

LOGIN_FAILED = N_("wrong username, password or code")
WEAK_PASSWORD = N_("choose a new password of at least 12 characters, unlike the old one")
WRONG_PASSWORD = N_("the current password is wrong")


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=120)
    password: str = Field(min_length=1, max_length=1024)
    totp: str = Field(min_length=1, max_length=12)


class Me(BaseModel):
    id: uuid.UUID
    username: str
    role: Role
    org_id: uuid.UUID
    on_duty: bool
    must_change_password: bool


class SessionOut(BaseModel):
    csrf_token: str
    responder: Me


class PasswordIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


def me(r: Responder) -> Me:
    return Me(
        id=r.id,
        username=r.username,
        role=r.role,
        org_id=r.org_id,
        on_duty=r.on_duty,
        must_change_password=r.must_change_password,
    )


def set_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(desk_sessions.SESSION_ABSOLUTE.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


@router.post("/login", responses={401: {}, 429: {}})
async def login(
    body: LoginIn,
    request: Request,
    response: Response,
    sessions: SessionsDep,
    vault: VaultDep,
    now: NowDep,
    limits: LimitsDep,
) -> SessionOut:
    """Log in with username, password and a TOTP code; sets a new session cookie."""
    responder, token, csrf = await sign_in(request, sessions, vault, now, limits, body)
    set_cookie(response, token)
    remember_device(response, vault, responder, now)
    return SessionOut(csrf_token=csrf, responder=me(responder))


async def sign_in(
    request: Request,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    now: datetime,
    limits: Limits,
    body: LoginIn,
) -> tuple[Responder, str, str]:
    """Check the credentials under the throttles and open a fresh session, replacing any the
    client brought: (responder, session token, CSRF token). The API and the dashboard share
    it. Raises ApiError 429 when throttled, 401 on any failure (never saying which part)."""
    # Each attempt is counted before its password is checked (a serialised hit), so requests
    # sent at the same moment cannot all pass a read-only check. Wrong passwords and wrong
    # codes alike count per address, per account from that address, and per account (a far
    # higher backstop): someone guessing a responder's password locks out only their own
    # address for it, never the responder at theirs (core.throttle). A browser holding the
    # account's device cookie counts against its own limit, not the address's nor the
    # account's (api.devices).
    device = await presented_device(request, sessions, vault, body.username, now)
    keyed = await count_attempt(request, sessions, limits, body.username, now, device)
    try:
        async with transaction(sessions) as session:
            responder = await auth.authenticate(
                session,
                vault,
                username=body.username,
                password=body.password,
                code=body.totp,
                now=now,
            )
            presented = request.cookies.get(COOKIE)
            if presented is not None:  # never keep a session the client brought along
                old = await desk_sessions.session_principal(session, presented, now)
                if old is not None and old[0].responder_id is not None:
                    await desk_sessions.revoke_sessions(
                        session, old[0].responder_id, now, only=old[1].id
                    )
            row, token, csrf = await desk_sessions.open_session(session, responder, now)
            await audit.record(
                session,
                vault,
                actor=f"responder:{responder.id}",
                action="auth.login",
                target=str(row.id),
                org_id=responder.org_id,
                now=now,
            )
    except AuthError as exc:
        await _failed(sessions, vault, exc, now)
        raise ApiError(401, LOGIN_FAILED) from None
    # A success takes its hits back, and clears the earlier failures from this address (the
    # responder's own typos) or this device; not the account's backstop, where others'
    # guesses count too.
    for throttle, key in keyed:
        if throttle in (limits.login_account_address, limits.login_device):
            await throttle.reset(sessions, key)
        else:
            await throttle.forget(sessions, key, now)
    return responder, token, csrf


async def count_attempt(
    request: Request,
    sessions: async_sessionmaker[AsyncSession],
    limits: Limits,
    username: str,
    now: datetime,
    device: str | None = None,
) -> list[Keyed]:
    """Count one attempt at ``username``'s password from this client against the login
    throttles (Limits.login; Limits.login_from_device for a ``device`` holding the account's
    cookie); ApiError 429 when one refuses. The client's address is the one the trusted
    proxy names (api.deps.client_address, AMPARO_TRUSTED_PROXIES)."""
    account, address = "user:" + normalise(username), "ip:" + client_address(request)
    if device is not None:
        keyed = limits.login_from_device(account, address, "device:" + device)
    else:
        keyed = limits.login(account, address)
    refused = await hit_each(sessions, keyed, now)
    if refused is not None:
        throttle, key = refused
        retry = str(await throttle.retry_after(sessions, key, now))
        raise ApiError(429, errors.TOO_MANY, headers={"Retry-After": retry})
    return keyed


async def _failed(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, exc: AuthError, now: datetime
) -> None:
    """Audit a failed login (never the password or the code). One against an unknown username
    is written too, as nobody's entry (no organisation lists it) and without the name, which
    is often a mistyped password: the same statements as for a known account, so the time a
    refusal takes does not tell whether a username exists."""
    async with transaction(sessions) as session:
        await audit.record(
            session,
            vault,
            actor="anonymous",
            action="auth.login_failed",
            target=None if exc.responder_id is None else str(exc.responder_id),
            org_id=exc.org_id,
            detail={"reason": exc.code},
            now=now,
        )


@router.post("/logout", status_code=204)
async def logout(
    principal: AnyPrincipalDep,
    response: Response,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> None:
    """End this session; its cookie no longer works anywhere."""
    if principal.responder_id is not None and principal.session_id is not None:
        await desk_sessions.revoke_sessions(
            session, principal.responder_id, now, only=principal.session_id
        )
        await audit.record(
            session,
            vault,
            actor=principal.actor,
            action="auth.logout",
            target=str(principal.session_id),
            org_id=principal.org_id,
            now=now,
        )
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


@router.get("/me", responses={404: {}})  # 404: a token is nobody
async def whoami(principal: AnyPrincipalDep, session: SessionDep) -> Me:
    """The logged-in responder."""
    responder = await _responder(session, principal.responder_id)
    return me(responder)


async def _responder(session: AsyncSession, responder_id: uuid.UUID | None) -> Responder:
    responder = None if responder_id is None else await session.get(Responder, responder_id)
    if responder is None:
        raise ApiError(404, errors.NOT_FOUND)  # an integration token is nobody
    return responder


@router.post("/password", responses={400: {}, 404: {}, 429: {}})
async def change_password(
    body: PasswordIn,
    request: Request,
    principal: AnyPrincipalDep,
    response: Response,
    session: SessionDep,
    sessions: SessionsDep,
    vault: VaultDep,
    now: NowDep,
    limits: LimitsDep,
) -> SessionOut:
    """Change the password: every session ends, and this client gets a new one."""
    responder = await _responder(session, principal.responder_id)
    try:
        await guarded_password_change(
            request,
            session,
            sessions,
            vault,
            limits,
            responder,
            body.current_password,
            body.new_password,
            now,
        )
    except AuthError as exc:
        raise ApiError(400, WRONG_PASSWORD if exc.code == "password" else WEAK_PASSWORD) from None
    _row, token, csrf = await desk_sessions.open_session(session, responder, now)
    set_cookie(response, token)
    remember_device(response, vault, responder, now)  # the old one died with the password
    return SessionOut(csrf_token=csrf, responder=me(responder))


async def guarded_password_change(
    request: Request,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    limits: Limits,
    responder: Responder,
    current: str,
    new: str,
    now: datetime,
) -> None:
    """desk_sessions.change_password, with wrong current passwords counted against the login
    throttles (R21), as at login: a stolen session cannot guess the password, and its thief
    locks out only their own address. The API and the dashboard share it. Raises ApiError 429 while
    throttled, AuthError on refusal."""
    keyed = await count_attempt(request, sessions, limits, responder.username, now)
    try:
        await desk_sessions.change_password(
            session, vault, responder=responder, current=current, new=new, now=now
        )
    except AuthError as exc:
        if exc.code != "password":  # not a guess (nothing written yet): taken back
            for throttle, key in keyed:
                await throttle.forget(sessions, key, now)
        raise
    # Right: taken back in the caller's transaction, which holds SQLite's write lock by now.
    for throttle, key in keyed:
        await throttle.forget_in(session, key, now)
