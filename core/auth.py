"""Who is calling the desk: a ``Principal`` (a responder or an API token) and its scopes, and
the responder's login (password + TOTP). Their sessions are in ``core.desk_sessions``, the
tokens in ``core.api_tokens``.

TOTP codes work once (R19): the step of the last accepted code is stored and moved forward by a
conditional update, so even two concurrent logins with the same code cannot both pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import pyotp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import Vault
from core.models import Responder, Role
from core.security import hash_password, verify_password

TOTP_STEP = 30
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
