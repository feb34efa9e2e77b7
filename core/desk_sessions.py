"""Responders' desk sessions (SECURITY.md R20): opened at login, found by their token, held
for a request that writes, revoked; all in the caller's transaction.

256-bit random tokens, only their SHA-256 stored; a new token at every login; idle and
absolute timeouts; every session of a responder revoked when the password changes
(``change_password``) or the account is disabled. A request that writes is held (``hold``,
``hold_token`` for an API token's): it cannot finish once its rights were taken away meanwhile.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.auth import MIN_PASSWORD, ROLE_SCOPES, AuthError, Principal, digest
from core.claims import dialect, locked, write_lock
from core.crypto import Vault
from core.models import ApiToken, DeskSession, Responder, Role
from core.security import hash_password, verify_password

SESSION_IDLE = timedelta(minutes=30)
SESSION_ABSOLUTE = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most once a minute
HELD = "amparo.held"  # session.info: the principal ``hold`` let through (SQLite)


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
