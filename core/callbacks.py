"""Issue and redeem opaque button tokens, bound on the server to chat, choice and expiry.

The alert button is the exception: its token is derived from the chat (``alert_token``), the
same on every menu sent there, stored nowhere and never expiring. Someone in danger who finds
a menu weeks old must not be told "this button no longer works"; and the token can do nothing
the chat cannot already do by typing /sos there, from that chat only.

``Issuer`` writes the tokens of concurrent sends in one transaction (group commit): a channel
sending thirty keyboards at once pays for one write, not thirty, and every send still returns
only once its own tokens are committed.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import Vault
from core.db import transaction
from core.models import CallbackToken

TTL = timedelta(hours=24)
ALERT = "panic"  # flows.words.ALERT_CHOICE: its button's token is ``alert_token``
# Tokens issued before 2026-12-06 were indexed through the blind-index normalisation; the
# longest lived 30 days (an alert button's, stored then: they still are honoured till expiry).
LEGACY_UNTIL = datetime(2026, 12, 6, tzinfo=UTC) + timedelta(days=30)
_KIND = "callback"
_ALERT_KIND = "alert-button"
_TOKEN_CHARS = 22  # as secrets.token_urlsafe(16): 132 bits, well within 64 bytes
_TABLE: Table = CallbackToken.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Chat:
    """Where buttons are sent: the channel, the chat's id there, and its address index."""

    channel: str
    id: str
    index: bytes


def alert_token(vault: Vault, chat: Chat) -> str:
    """The alert button's token in this chat: an HMAC of the channel and the chat's id under
    the index key, which neither key rotation changes (core.keys), so not to be worked out
    from the chat id, and meaning nothing in any other chat. The same on every menu: stored
    nowhere, never expiring."""
    return _token(vault.exact_index(_ALERT_KIND, f"{chat.channel}\x00{chat.id}"))


def _token(mac: bytes) -> str:
    return base64.urlsafe_b64encode(mac).decode()[:_TOKEN_CHARS]


def is_alert(vault: Vault, *, token: str, chat: Chat) -> bool:
    """``token`` is this chat's alert button (constant-time comparisons). Those sent before
    2026-12-08 were an HMAC of the chat's address index, which ``amparo keys rotate-index``
    replaces: still honoured until that is run."""
    given = token.encode("utf-8", "surrogatepass")
    before = _token(vault.exact_index(_ALERT_KIND, chat.index.hex()))
    ours = hmac.compare_digest(given, alert_token(vault, chat).encode())
    return hmac.compare_digest(given, before.encode()) | ours


def fresh(
    vault: Vault, *, chat: Chat, choices: list[str], now: datetime
) -> tuple[list[str], list[dict[str, Any]]]:
    """One token per choice, and the rows to store: only the tokens' HMACs. The alert
    button's is the chat's own (``alert_token``): no row."""
    keyboard = uuid.uuid4()
    tokens = [
        alert_token(vault, chat) if choice == ALERT else secrets.token_urlsafe(16)
        for choice in choices
    ]
    rows = [
        {
            "token_index": vault.exact_index(_KIND, token),
            "chat_index": chat.index,
            "keyboard": keyboard,
            "choice": choice,
            "expires_at": now + TTL,
        }
        for token, choice in zip(tokens, choices, strict=True)
        if choice != ALERT
    ]
    return tokens, rows


async def issue(
    session: AsyncSession, vault: Vault, *, chat: Chat, choices: list[str], now: datetime
) -> list[str]:
    """One fresh token per choice, stored in ``session``'s transaction."""
    tokens, rows = fresh(vault, chat=chat, choices=choices, now=now)
    if rows:
        await session.execute(insert(_TABLE), rows)
    return tokens


class Issuer:
    """Tokens stored by group commit: while one transaction writes, the sends arriving meanwhile
    queue their rows; the first of them then writes them all in the next one."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], vault: Vault) -> None:
        self.sessions, self.vault = sessions, vault
        self._writing = asyncio.Lock()  # one writer at a time: sends must not drain the pool
        self._next: tuple[list[dict[str, Any]], asyncio.Future[None]] | None = None

    async def issue(self, *, chat: Chat, choices: list[str], now: datetime) -> list[str]:
        tokens, rows = fresh(self.vault, chat=chat, choices=choices, now=now)
        if not rows:  # the alert button alone: nothing to store
            return tokens
        if self._next is None:
            self._next = ([], asyncio.get_running_loop().create_future())
        group, written = self._next
        group.extend(rows)
        async with self._writing:
            if self._next is not None and self._next[1] is written:  # nobody took it: we do
                self._next = None
                try:
                    async with transaction(self.sessions) as session:
                        await session.execute(insert(_TABLE), group)
                    written.set_result(None)
                except BaseException as exc:  # every send of the group fails, and retries
                    written.set_exception(RuntimeError(f"tokens not stored: {type(exc).__name__}"))
                    if not isinstance(exc, Exception):
                        # Cancelled (a shutdown): the group's other sends still see the
                        # failure, but none may be left to retrieve it, and asyncio would
                        # log it as never retrieved.
                        written.exception()
                        raise
        await written
        return tokens


async def redeem(
    session: AsyncSession, vault: Vault, *, token: str, chat: Chat, now: datetime
) -> str | None:
    """The choice behind ``token`` if it was sent to this chat and is still valid; used once.

    This chat's alert button is the alert, always, and nothing is looked up or spent. A
    foreign, expired, reused or garbage token gives None and changes nothing else. One
    statement, a write first: no read that a concurrent writer could invalidate (SQLite).
    """
    if not token or len(token) > 64:
        return None
    if is_alert(vault, token=token, chat=chat):
        return ALERT
    # Exact: a token with its case changed is another token (R4). Buttons sent before
    # tokens were indexed exactly (normalised, like addresses) are still honoured until
    # they expire (LEGACY_UNTIL), then this goes. So are alert buttons stored before they
    # were derived (their rows last 30 days): the same statement finds them.
    indexes = [vault.exact_index(_KIND, token)]
    if now < LEGACY_UNTIL:
        indexes.append(vault.blind_index(_KIND, token))
    keyboard = select(CallbackToken.keyboard).where(
        CallbackToken.token_index.in_(indexes), CallbackToken.chat_index == chat.index
    )
    used = await session.execute(
        delete(CallbackToken)
        .where(CallbackToken.keyboard.in_(keyboard.scalar_subquery()))
        .returning(CallbackToken.token_index, CallbackToken.choice, CallbackToken.expires_at)
        .execution_options(synchronize_session=False)
    )
    for token_index, choice, expires_at in used:
        if token_index in indexes:
            return str(choice) if expires_at > now else None
    return None


async def move(session: AsyncSession, *, old: bytes, new: bytes) -> None:
    """A chat's id changed (a Telegram group became a supergroup, taking its messages along):
    the buttons already posted in it keep working there."""
    await session.execute(
        update(CallbackToken).where(CallbackToken.chat_index == old).values(chat_index=new)
    )
