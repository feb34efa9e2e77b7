"""Dependencies every route shares: the database session, the caller, the clock, the vault."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncGenerator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import errors
from api.errors import ApiError
from core import api_tokens, db, desk_sessions
from core.auth import Principal
from core.crypto import Vault
from core.throttle import Limits

COOKIE = "__Host-amparo_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
AFTER_COMMIT = "amparo.after_commit"


async def get_db(request: Request) -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request, committed before the response leaves; then the
    callbacks registered with ``after_commit`` run (never when the transaction failed), and
    the work core left for after the commit (``core.db.then``: a broadcast's fan-out).
    The transaction begins with the session's first use, and an error rolls it back as the
    session closes: a ``session.begin()`` block does the same, for one more hop through
    SQLAlchemy's greenlet bridge and a context of its own (bench/api.py)."""
    async with request.app.state.sessions() as session:
        yield session
        if not await desk_sessions.still_held(session):  # SQLite: disabled while this request ran
            raise ApiError(401, errors.UNAUTHENTICATED)
        if session.in_transaction():
            await session.commit()
        for callback in session.info.pop(AFTER_COMMIT, ()):
            callback()
        await db.committed(session)


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this request's transaction has committed."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


# The dependencies are coroutines: FastAPI runs a plain function in a worker thread, a round
# trip that cost the alert queue more than its query (bench/api.py).
async def get_now() -> datetime:
    return datetime.now(UTC)


async def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


def token_cache(request: Request) -> api_tokens.TokenCache:
    """This app's cache of live API tokens (one per app: tests run several apps at once)."""
    cache: api_tokens.TokenCache | None = getattr(request.app.state, "token_cache", None)
    if cache is None:
        cache = request.app.state.token_cache = api_tokens.TokenCache()
    return cache


async def get_limits(request: Request) -> Limits:
    limits: Limits | None = getattr(request.app.state, "limits", None)
    if limits is None:
        vault: Vault = request.app.state.vault
        limits = request.app.state.limits = Limits(keyer=vault.blind_index)
    return limits


async def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    """The session factory, for work that must commit apart from the request (throttles)."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return factory


SessionDep = Annotated[AsyncSession, Depends(get_db, scope="function")]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
NowDep = Annotated[datetime, Depends(get_now)]
VaultDep = Annotated[Vault, Depends(get_vault)]
LimitsDep = Annotated[Limits, Depends(get_limits)]


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _sep, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def _principal(request: Request, session: SessionDep, now: NowDep) -> Principal:
    return await _resolve(request, session, now, admins=False)


async def _admin(request: Request, session: SessionDep, now: NowDep) -> Principal:
    """The caller of a route that may change rights: an admin's request that writes locks
    the organisation's admins first (core.desk_sessions.hold)."""
    return await _resolve(request, session, now, admins=True)


async def _resolve(
    request: Request, session: AsyncSession, now: datetime, *, admins: bool
) -> Principal:
    token, writes = bearer(request), request.method not in SAFE_METHODS
    if token is not None:
        principal = await api_tokens.token_principal(session, token, now, token_cache(request))
        # Revoked while this request waited (or in a cache's few seconds): it writes nothing.
        if principal is None or (
            writes and not await desk_sessions.hold_token(session, principal, now)
        ):
            raise ApiError(401, errors.UNAUTHENTICATED)
        return principal
    cookie = request.cookies.get(COOKIE)
    found = (
        None
        if cookie is None
        else await desk_sessions.session_principal(session, cookie, now, touch=not writes)
    )
    if found is None:
        raise ApiError(401, errors.UNAUTHENTICATED)
    principal, row = found
    # SameSite=Strict already keeps other sites' forms out; the header is the second lock.
    if writes and not desk_sessions.csrf_matches(row, request.headers.get(CSRF_HEADER)):
        raise ApiError(403, errors.BAD_CSRF)
    # Disabled, or the session revoked, while this request waited: it writes nothing.
    if writes and not await desk_sessions.hold(session, principal, row, now, admins=admins):
        raise ApiError(401, errors.UNAUTHENTICATED)
    return principal


async def signed_in(request: Request, session: AsyncSession, now: datetime) -> Principal | None:
    """The caller, or None for one holding no live token or session (no exception)."""
    try:
        return await _principal(request, session, now)
    except ApiError:
        return None


async def any_principal(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    """The caller, even one who must still change the password (for /auth routes)."""
    return principal


def _settled(principal: Principal) -> Principal:
    if principal.must_change_password:
        raise ApiError(403, errors.CHANGE_PASSWORD)
    return principal


async def current_principal(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    return _settled(principal)


AnyPrincipalDep = Annotated[Principal, Depends(any_principal)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]


# The scope each ``require`` check grants on, by the check: the OpenAPI document names it
# on the routes that depend on one (api.openapi).
SCOPE_OF: dict[object, str] = {}


def require(scope: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency granting the route only to callers holding ``scope`` (deny by default).
    It sits right on ``_principal`` (``_admin`` for org:admin): every level of dependencies
    costs each request."""

    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if scope not in _settled(principal).scopes:  # named: a token's owner adds it
            raise ApiError(403, errors.FORBIDDEN, extra={"missing_scope": scope})
        return principal

    async def check_admin(principal: Annotated[Principal, Depends(_admin)]) -> Principal:
        return await check(principal)

    granted = check_admin if scope == "org:admin" else check
    SCOPE_OF[granted] = scope
    return granted


AlertsRead = Annotated[Principal, Depends(require("alerts:read"))]
AlertsWrite = Annotated[Principal, Depends(require("alerts:write"))]
DefendersRead = Annotated[Principal, Depends(require("defenders:read"))]
DefendersWrite = Annotated[Principal, Depends(require("defenders:write"))]
ReportsRead = Annotated[Principal, Depends(require("reports:read"))]
ReportsWrite = Annotated[Principal, Depends(require("reports:write"))]
ReportsExport = Annotated[Principal, Depends(require("reports:export"))]
PoliciesRead = Annotated[Principal, Depends(require("policies:read"))]
PoliciesWrite = Annotated[Principal, Depends(require("policies:write"))]
BroadcastsRead = Annotated[Principal, Depends(require("broadcasts:read"))]
BroadcastsWrite = Annotated[Principal, Depends(require("broadcasts:write"))]
AdminDep = Annotated[Principal, Depends(require("org:admin"))]


def client_address(request: Request) -> str:
    """Who is asking, as far as limits go: the socket's peer, or what the trusted proxy
    (AMPARO_TRUSTED_PROXIES) says it is; uvicorn believes X-Forwarded-For from that address
    only (abuse case 17). An IPv6 client counts as its /64: one host holds a whole /64, and
    would otherwise have a fresh budget per address."""
    host = request.client.host if request.client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
