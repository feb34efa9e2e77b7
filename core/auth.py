"""Who is calling the desk: responders (password + TOTP, server-side sessions) and API tokens.

Sessions (SECURITY.md R20): 256-bit random tokens, only their SHA-256 stored; a new token at
every login; idle and absolute timeouts; every session of a responder revoked when the password
changes or the account is disabled. TOTP codes work once (R19): the step of the last accepted
code is stored and moved forward by a conditional update, so even two concurrent logins with
the same code cannot both pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import pyotp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.claims import dialect, locked, write_lock
from core.crypto import Vault
from core.models import ApiToken, DeskSession, Responder, Role
from core.security import hash_password, verify_password

SESSION_IDLE = timedelta(minutes=30)
SESSION_ABSOLUTE = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most once a minute
TOKEN_CACHE_TTL = timedelta(seconds=5)  # how long another process may read with a revoked token
TOTP_STEP = 30
HELD = "amparo.held"  # session.info: the principal ``hold`` let through (SQLite)
MIN_PASSWORD = 12

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.observer: frozenset(
        {"alerts:read", "defenders:read", "reports:read", "policies:read", "broadcasts:read"}
    ),
    Role.responder: frozenset(
        {
            "alerts:read",
            "alerts:write",
            "defenders:read",
            "defenders:write",
            "reports:read",
            "reports:write",
            "reports:export",
            "policies:read",
            "broadcasts:read",
            "broadcasts:write",
        }
    ),
}
ROLE_SCOPES[Role.admin] = ROLE_SCOPES[Role.responder] | {"policies:write", "org:admin"}
# What an integration token may hold: never org:admin (a token cannot mint tokens).
TOKEN_SCOPES = ROLE_SCOPES[Role.responder] | {"policies:write"}


class AuthError(Exception):
    """Authentication failed; ``code`` says why, for the server only (the client sees one text).
    ``responder_id`` and ``org_id`` name the account tried, when the username is someone's."""

    def __init__(self, code: str, responder: Responder | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.responder_id = None if responder is None else responder.id
        self.org_id = None if responder is None else responder.org_id


@dataclass(frozen=True)
class Principal:
    org_id: uuid.UUID
    scopes: frozenset[str]
    actor: str  # "responder:<id>" or "token:<id>", as written in the audit log
    responder_id: uuid.UUID | None = None
    role: Role | None = None
    session_id: uuid.UUID | None = None
    must_change_password: bool = False
    token_id: uuid.UUID | None = None


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step ``code`` belongs to (now, or one step either side), else None."""
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    step = int(now.timestamp()) // TOTP_STEP
    for candidate in (step, step - 1, step + 1):
        if secrets.compare_digest(totp.at(candidate * TOTP_STEP), code):
            return candidate
    return None


async def authenticate(
    session: AsyncSession, vault: Vault, *, username: str, password: str, code: str, now: datetime
) -> Responder:
    """The responder whose password and unused TOTP code these are; AuthError otherwise."""
    # PostgreSQL refuses a NUL in text: such a name is nobody's (same work, same answer).
    found = None if "\x00" in username else select(Responder).where(Responder.username == username)
    responder = None if found is None else await session.scalar(found)
    # Argon2id (~150 ms) in a thread: a burst of logins must not stop the event loop, which
    # in `amparo serve` also runs the escalation engine and the bots.
    if responder is None:
        await asyncio.to_thread(verify_password, _dummy_hash(), password)  # the same work
        raise AuthError("unknown")
    if not await asyncio.to_thread(verify_password, responder.password_hash, password):
        raise AuthError("password", responder)
    if not responder.active:
        raise AuthError("disabled", responder)
    secret = responder.get_text(vault, "totp_secret_enc")
    step = None if secret is None else totp_step(secret, code, now)
    if step is None:
        raise AuthError("totp", responder)
    used = await session.execute(
        update(Responder)
        .where(Responder.id == responder.id, Responder.totp_last_step < step)
        .values(totp_last_step=step)
        .returning(Responder.id)
        .execution_options(synchronize_session=False)
    )
    if used.first() is None:
        raise AuthError("totp_reused", responder)
    responder.totp_last_step = step
    return responder


async def open_session(
    session: AsyncSession, responder: Responder, now: datetime
) -> tuple[DeskSession, str, str]:
    """A fresh session (never one the client proposed): (row, token, csrf token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    row = DeskSession(
        id=uuid.uuid4(),
        token_hash=digest(token),
        csrf_hash=digest(csrf),
        responder_id=responder.id,
        org_id=responder.org_id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + SESSION_ABSOLUTE,
    )
    session.add(row)
    await session.flush()
    return row, token, csrf


async def session_principal(
    session: AsyncSession, token: str, now: datetime, *, touch: bool = True
) -> tuple[Principal, DeskSession] | None:
    """The principal behind a live session token, or None (expired, idle, revoked, disabled).
    ``touch=False``: this request is not the responder's doing (a page refreshing itself), so
    it does not keep the session from going idle."""
    found = (
        await session.execute(
            select(DeskSession, Responder)
            .join(Responder, Responder.id == DeskSession.responder_id)
            .where(DeskSession.token_hash == digest(token))
        )
    ).first()
    if found is None:
        return None
    row, responder = found
    if not _live(row, responder, now):
        return None
    if touch:
        _touch(row, now)
    principal = Principal(
        org_id=responder.org_id,
        scopes=ROLE_SCOPES[responder.role],
        actor=f"responder:{responder.id}",
        responder_id=responder.id,
        role=responder.role,
        session_id=row.id,
        must_change_password=responder.must_change_password,
    )
    return principal, row


def _live(row: DeskSession, responder: Responder, now: datetime) -> bool:
    return not (
        row.revoked_at is not None
        or now >= row.expires_at
        or now >= row.last_seen_at + SESSION_IDLE
        or not responder.active
        or responder.org_id != row.org_id
    )


def _touch(row: DeskSession, now: datetime) -> None:
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now


async def hold(
    session: AsyncSession, principal: Principal, row: DeskSession, now: datetime, *, admins: bool
) -> bool:
    """Keep a responder's request that writes from finishing once they are disabled, their
    role changed or their session revoked: it was authenticated before any lock, and its
    write still went through after the change committed. False: no longer so (the caller
    answers as for a dead session). Call it before anything else locks or writes.

    PostgreSQL: the responder's row is locked now (``FOR NO KEY UPDATE``: their own writes
    take turns, a foreign key's check does not wait), then their session's, and both are read
    again. The lock order (api.routes.responders): responders' rows (``admins``: the
    organisation's active admins' too, for a request that changes rights, which locks them
    first), then sessions, then anything else. SQLite: the request's first write waits for
    the writer's lock, so the check waits for the commit (``still_held``)."""
    if dialect(session) != "postgresql":
        _touch(row, now)
        session.info[HELD] = (principal, now)
        return True
    mine = Responder.id == principal.responder_id
    if admins:
        mine |= (
            (Responder.org_id == principal.org_id)
            & (Responder.role == Role.admin)
            & (Responder.active.is_(True))
        )
    them = select(Responder.id).where(mine).order_by(Responder.id)
    await session.execute(locked(them, session, key_share=True))
    return await _still(session, principal, now)


async def hold_token(session: AsyncSession, principal: Principal, now: datetime) -> bool:
    """``hold`` for an API token's request that writes: authenticated before any lock (or by
    a cache, ``TokenCache``), its write still went through after the token's revocation had
    committed. PostgreSQL: the token's row is locked now (``FOR NO KEY UPDATE``: a revocation
    waits for the write, or the write sees it) and read again; SQLite: at the commit, under
    the writer's lock (``still_held``). The token's writes take turns, as a responder's do."""
    if dialect(session) != "postgresql":
        session.info[HELD] = (principal, now)
        return True
    return await _token_live(session, principal)


async def _token_live(session: AsyncSession, principal: Principal) -> bool:
    stmt = select(ApiToken.revoked_at).where(
        ApiToken.id == principal.token_id, ApiToken.org_id == principal.org_id
    )
    found = (await session.execute(locked(stmt, session, key_share=True))).first()
    return found is not None and found[0] is None


async def still_held(session: AsyncSession) -> bool:
    """SQLite, before the request commits: whether the responder ``hold`` let through is still
    active, in the same role, with a live session, or the token ``hold_token`` let through is
    still not revoked (read under the writer's lock)."""
    held: tuple[Principal, datetime] | None = session.info.pop(HELD, None)
    if held is None:
        return True
    await write_lock(session)
    if held[0].token_id is not None:
        return await _token_live(session, held[0])
    return await _still(session, *held)


async def _still(session: AsyncSession, principal: Principal, now: datetime) -> bool:
    stmt = (
        select(DeskSession, Responder)
        .join(Responder, Responder.id == DeskSession.responder_id)
        .where(DeskSession.id == principal.session_id)
        .execution_options(populate_existing=True)
    )
    found = (await session.execute(locked(stmt, session, of=DeskSession, key_share=True))).first()
    if found is None or not _live(*found, now) or found[1].role is not principal.role:
        return False
    _touch(found[0], now)
    return True


def csrf_matches(row: DeskSession, presented: str | None) -> bool:
    return presented is not None and secrets.compare_digest(digest(presented), row.csrf_hash)


async def revoke_sessions(
    session: AsyncSession, responder_id: uuid.UUID, now: datetime, *, only: uuid.UUID | None = None
) -> None:
    held = session.info.get(HELD)
    if held is not None and held[0].responder_id == responder_id:
        del session.info[HELD]  # the request ends its own rights (a logout): not to check
    query = update(DeskSession).where(
        DeskSession.responder_id == responder_id, DeskSession.revoked_at.is_(None)
    )
    query = query if only is None else query.where(DeskSession.id == only)
    await session.execute(
        query.values(revoked_at=now).execution_options(synchronize_session=False)
    )


async def change_password(
    session: AsyncSession,
    vault: Vault,
    *,
    responder: Responder,
    current: str,
    new: str,
    now: datetime,
) -> None:
    """Set a new password and revoke every session of the responder (the caller opens one)."""
    if not await asyncio.to_thread(verify_password, responder.password_hash, current):
        raise AuthError("password")
    if len(new) < MIN_PASSWORD or len(new) > 1024 or new == current:
        raise AuthError("weak_password")
    responder.password_hash = await asyncio.to_thread(hash_password, new)
    responder.must_change_password = False
    await revoke_sessions(session, responder.id, now)
    await audit.record(
        session,
        vault,
        actor=f"responder:{responder.id}",
        action="auth.password_change",
        target=str(responder.id),
        org_id=responder.org_id,
        now=now,
    )


async def create_token(
    session: AsyncSession, *, org_id: uuid.UUID, name: str, scopes: list[str], now: datetime
) -> tuple[ApiToken, str]:
    """A new integration token: (row, plaintext shown once)."""
    plaintext = "amp_" + secrets.token_urlsafe(32)
    row = ApiToken(
        id=uuid.uuid4(),
        org_id=org_id,
        name=name,
        token_hash=digest(plaintext),
        scopes=sorted(set(scopes)),
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row, plaintext


class TokenCache:
    """Live tokens' principals for a few seconds, so a busy integration is not one more query
    per request. Only live tokens are kept (a wrong or revoked token always asks the database).

    Revocation: ``revoked()``, called once the revoking transaction has committed, empties the
    cache and starts a new generation; a lookup that read the database before that moment
    belongs to the old generation and is not stored. So a revoked token stops working at once in
    this process, and in any other process sharing the database (``amparo api --workers``, or
    several ``amparo api``) within ``ttl``: tests/api/test_hot_path.py; for a write, at once
    (``hold_token``: tests/api/test_token_race.py). Sessions are not cached.
    """

    def __init__(self, ttl: timedelta = TOKEN_CACHE_TTL, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[bytes, tuple[datetime, Principal]] = {}

    def get(self, key: bytes, now: datetime) -> Principal | None:
        if (found := self._entries.get(key)) is None:
            return None
        stored_at, principal = found
        if not stored_at <= now < stored_at + self.ttl:  # stale, or the clock went back
            del self._entries[key]
            return None
        return principal

    def put(self, key: bytes, principal: Principal, now: datetime, generation: int) -> None:
        if generation != self.generation:
            return  # read before a revocation committed: maybe no longer true
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (now, principal)

    def revoked(self) -> None:
        self._entries.clear()
        self.generation += 1


async def token_principal(
    session: AsyncSession, token: str, now: datetime, cache: TokenCache | None = None
) -> Principal | None:
    key = digest(token)
    generation = 0
    if cache is not None:
        if (cached := cache.get(key, now)) is not None:
            return cached
        generation = cache.generation
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == key))
    if row is None or row.revoked_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
    scopes = frozenset(row.scopes) & TOKEN_SCOPES
    principal = Principal(
        org_id=row.org_id, scopes=scopes, actor=f"token:{row.id}", token_id=row.id
    )
    if cache is not None:
        cache.put(key, principal, now, generation)
    return principal
