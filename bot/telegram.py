"""Telegram, with python-telegram-bot as a transport only (no ConversationHandler).

Polling is our own ``getUpdates`` loop, so an update's offset is confirmed only after the flows
have taken it (at-least-once; the engine dedupes on ``update_id``). In webhook mode, the route
``/hooks/telegram`` checks the secret header in constant time before reading the body, and only
answers 200 once the update is handled, so Telegram retries what failed. While the database or
Telegram (its file server) cannot be reached, every update waits, however long that lasts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response
from telegram import CallbackQuery, Message, Update
from telegram.error import BadRequest, ChatMigrated, NetworkError, RetryAfter, TelegramError

from bot.telegram_http import AiohttpRequest, SendingBot
from bot.telegram_render import (
    CHANNEL,
    GROUPS,
    delivery_error,
    files,
    from_group,
    markup,
    moved,
    split_text,
)
from core import callbacks, defenders
from core.crypto import Vault
from core.db import unreachable
from core.discreet import NOT_DELETED
from core.i18n import gettext, negotiate
from core.media import MAX_BYTES
from core.messages import (
    Address,
    Delivered,
    DeliveryError,
    Inbound,
    InboundAttachment,
    Inbox,
    Location,
    NotHandled,
    Outbound,
)

os.environ.setdefault("PTB_TIMEDELTA", "1")  # retry_after as a timedelta, as PTB 23 will do
log = logging.getLogger("amparo.telegram")
UPDATES = ["message", "edited_message", "callback_query"]
POISON_TRIES = 3
STALLED_S = 1.0  # the first wait while the database is down (doubling up to 30 s)
# How long a defender's file that Telegram fails to hand over (a 5xx, a flood wait) holds its
# message back. Updates are taken in order, so everyone's wait behind it: past this, the
# message goes on to the flows without the file, which ask for it again.
FILE_PATIENCE_S = 120.0
Clock = Callable[[], datetime]


class Telegram:
    name: ClassVar[str] = CHANNEL

    def __init__(
        self,
        *,
        token: str,
        api_url: str,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        file_url = api_url[: -len("/bot")] + "/file/bot" if api_url.endswith("/bot") else api_url
        self.bot = SendingBot(
            token,
            base_url=api_url,
            base_file_url=file_url,
            request=AiohttpRequest(connections=16),
            get_updates_request=AiohttpRequest(),
        )
        self.sessions = sessions
        self.vault = vault
        self.webhook_url = webhook_url
        self.webhook_secret = (webhook_secret or "").encode()
        self.clock = clock
        self.inbox: Inbox | None = None
        self.ready = asyncio.Event()
        self.tokens = callbacks.Issuer(sessions, vault)
        self._failed: dict[int, int] = {}  # webhook mode: update_id -> failed deliveries
        # One press at a time per chat (webhook mode is concurrent): a keyboard's token is
        # spent only after the flows took its press, and no sibling may pass meanwhile.
        self._pressing: weakref.WeakValueDictionary[bytes, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Polling: when getUpdates started failing (a revoked token, Telegram blocked
        # upstream): no defender's message arrives meanwhile; /healthz says so (R27).
        self.failing_since: float | None = None
        self.stalled_since: float | None = None  # polling: an update waits on an outage
        self._file_failing: dict[str, float] = {}  # file_id -> when fetching it first failed

    def inbound_down_s(self) -> float:
        """How long no message could be fetched, or handled for an outage (0: they can)."""
        since = [t for t in (self.failing_since, self.stalled_since) if t is not None]
        return 0.0 if not since else time.monotonic() - min(since)

    def chat_index(self, chat_id: str | int) -> bytes:
        return self.vault.address_index(self.name, str(chat_id))

    def chat(self, chat_id: str | int) -> callbacks.Chat:
        return callbacks.Chat(self.name, str(chat_id), self.chat_index(chat_id))

    async def _chat(self, chat_id: int) -> callbacks.Chat:
        """``chat`` as the chat's row has it during a rotation (``defenders.lookup_index``)."""
        found = await defenders.lookup_index(self.sessions, self.vault, self.name, str(chat_id))
        return callbacks.Chat(self.name, str(chat_id), found)

    # --- inbound -------------------------------------------------------------------------

    async def run(self, inbox: Inbox) -> None:
        self.inbox = inbox
        async with self.bot:  # getMe
            if self.webhook_url:
                await self.bot.set_webhook(
                    self.webhook_url,
                    secret_token=self.webhook_secret.decode(),
                    allowed_updates=UPDATES,
                )
                self.ready.set()
                await asyncio.Event().wait()  # the webhook route does the work
            await self.bot.delete_webhook()
            self.ready.set()
            await self._poll()

    async def _poll(self) -> None:
        offset, backoff, stalled = 0, 1.0, STALLED_S
        failures: dict[int, int] = {}
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=timedelta(seconds=25), allowed_updates=UPDATES
                )
                backoff, self.failing_since = 1.0, None
            except TelegramError as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                log.warning("getUpdates failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            for update in updates:
                try:
                    await self.handle(update)
                except Exception as exc:
                    if isinstance(exc, NotHandled) and exc.transient:
                        # The database or Telegram is down: every update waits; none is let
                        # go as poison.
                        log.error("update not handled: unavailable; retrying")
                        if self.stalled_since is None:
                            self.stalled_since = time.monotonic()
                        await asyncio.sleep(stalled)
                        stalled = min(stalled * 2, 30.0)
                        break
                    # Keep the offset: the update comes again (the engine dedupes it), but a
                    # poison update must not block everyone else's messages for ever.
                    tries = failures[update.update_id] = failures.get(update.update_id, 0) + 1
                    log.error(
                        "update not handled",
                        extra={"update": update.update_id, "error": type(exc).__name__},
                    )
                    if tries < POISON_TRIES:
                        await asyncio.sleep(tries)
                        break
                failures.pop(update.update_id, None)
                offset, stalled = max(offset, update.update_id + 1), STALLED_S
                self.stalled_since = None

    async def webhook(self, request: Request) -> Response:
        """The ``/hooks/telegram`` route: secret first, body after (SECURITY.md R1)."""
        given = request.headers.get("x-telegram-bot-api-secret-token", "").encode()
        if not self.webhook_secret or not hmac.compare_digest(given, self.webhook_secret):
            return Response(status_code=401)
        try:
            update = Update.de_json(await request.json(), self.bot)
        except (ValueError, TypeError, KeyError):
            return Response(status_code=400)
        try:
            await self.handle(update)
        except Exception as exc:
            if isinstance(exc, NotHandled) and exc.transient:  # the database or Telegram is down
                log.error("update not handled: unavailable")
                return Response(status_code=503)  # Telegram keeps it and sends it again
            # 500: Telegram sends it again (the engine dedupes it), but, as in polling, a
            # poison update is let go after POISON_TRIES instead of being retried for hours.
            tries = self._failed[update.update_id] = self._failed.get(update.update_id, 0) + 1
            log.error(
                "update not handled",
                extra={"update": update.update_id, "error": type(exc).__name__},
            )
            if tries < POISON_TRIES:
                while len(self._failed) > 1000:  # bounded: the oldest first
                    del self._failed[next(iter(self._failed))]
                return Response(status_code=500)
        self._failed.pop(update.update_id, None)
        return Response(status_code=200)

    async def handle(self, update: Update) -> None:
        """Hand ``update`` to the flows. Raises NotHandled(transient=True) when the database or
        Telegram could not be reached (a lost connection, a 5xx): the update must come again,
        and not be let go as poison after POISON_TRIES (R2: the handlers are idempotent)."""
        assert self.inbox is not None, "run() first"
        try:
            if update.callback_query is not None:
                await self._press(update)
                return
            inbound = await self._from_message(update)
            if inbound is not None:
                await self.inbox(inbound)
        except NotHandled:
            raise
        except Exception as exc:
            if not _unreachable(exc):
                raise
            log.warning("update not handled for now", extra={"error": type(exc).__name__})
            raise NotHandled(transient=True) from None

    async def _from_message(self, update: Update) -> Inbound | None:
        if update.message is not None and update.message.chat.type in GROUPS:
            new = update.message
            if new.migrate_to_chat_id:  # Telegram's own service message: a supergroup now
                return moved(
                    str(update.update_id), new.chat.id, new.migrate_to_chat_id, self.clock()
                )
            return from_group(update, new.chat.id, new.from_user, self.clock(), text=new.text)
        message = update.message or update.edited_message
        if message is None or message.chat.type != "private":
            return None  # private chats only, and the desk's group (SECURITY.md R3)
        user = message.from_user
        forwarded = message.forward_origin is not None or message.via_bot is not None
        edited = update.edited_message is not None
        location = None
        if message.location is not None:
            location = _location(message, edited=edited)
        return Inbound(
            channel=self.name,
            address=str(message.chat.id),
            message_id=str(update.update_id),
            received_at=self.clock(),  # never the client's clock
            text=message.text or message.caption,
            location=location,
            attachments=await self._attachments(message, fetch=not (forwarded or edited)),
            language=user.language_code if user else None,
            forwarded=forwarded,
            edited=edited,
            chat_message_id=str(message.message_id),
        )

    async def _attachments(
        self, message: Message, *, fetch: bool
    ) -> tuple[InboundAttachment, ...]:
        """Files are downloaded only for a defender's own new messages (the flows read nothing
        else): a stranger sending 20 MB files cannot hold the poller up for everyone."""
        found = files(message)
        if found and fetch:
            fetch = await self._from_defender(message.chat.id)
        attachments = []
        for kind, file_id, mime, size, name in found:
            data = None
            if fetch and (size is None or size <= MAX_BYTES):  # size first (R16)
                data, size = await self._download(file_id, size)
            attachments.append(InboundAttachment(kind, mime, size or 0, data, name))
        return tuple(attachments)

    async def _download(self, file_id: str, size: int | None) -> tuple[bytes | None, int | None]:
        """(the file, or None if over MAX_BYTES; its size if known). The message does not
        always say a file's size: getFile says it too, and refuses files over 20 MB."""
        try:
            file = await self.bot.get_file(file_id)
            size = file.file_size if file.file_size is not None else size
            if size is not None and size > MAX_BYTES:
                return None, size
            # The file URL embeds the token: it is never logged (httpx stays at WARNING).
            data = bytes(await file.download_as_bytearray())
        except BadRequest as exc:
            if "too big" not in exc.message.lower():
                raise
            return None, size  # "file is too big": over 20 MB
        except (NetworkError, RetryAfter):
            first = self._file_failing.setdefault(file_id, time.monotonic())
            while len(self._file_failing) > 1000:  # bounded: the oldest first
                del self._file_failing[next(iter(self._file_failing))]
            if time.monotonic() - first < FILE_PATIENCE_S:
                raise  # a passing outage: the update comes again (``handle``)
            self._file_failing.pop(file_id, None)
            log.warning("file not fetched: the message goes on without it")
            return None, size
        self._file_failing.pop(file_id, None)
        return (data if len(data) <= MAX_BYTES else None), len(data)

    async def _from_defender(self, chat_id: int) -> bool:
        async with self.sessions() as session:
            index = await defenders.index_of(session, self.vault, self.name, str(chat_id))
            return await defenders.is_defender(session, self.name, index)

    async def _press(self, update: Update) -> None:
        query = update.callback_query
        assert query is not None and self.inbox is not None
        message = query.message
        if message is not None and message.chat.type in GROUPS:  # flows.desk checks who
            await _answer(query)
            user, token = query.from_user, query.data or ""
            group = from_group(update, message.chat.id, user, self.clock(), token=token)
            if group is not None:
                await self.inbox(group)
            return
        chat_id = message.chat.id if message is not None else query.from_user.id
        chat = await self._chat(chat_id)
        async with self._pressing.setdefault(chat.index, asyncio.Lock()):
            choice = await self._redeem(query.data or "", chat, spend=False)
            if choice is None or message is None or message.chat.type != "private":
                _ = gettext(negotiate([query.from_user.language_code]))
                text = _("This button no longer works. Please send your answer again.")
                await _answer(query, text)
                return
            await _answer(query)
            try:  # the keyboard goes away once used
                await self.bot.edit_message_reply_markup(chat_id, message.message_id)
            except TelegramError:
                pass
            await self.inbox(
                Inbound(
                    channel=self.name,
                    address=str(chat_id),
                    message_id=str(update.update_id),
                    received_at=self.clock(),
                    choice=choice,
                    language=query.from_user.language_code,
                    chat_message_id=str(message.message_id),
                )
            )
            # Only now: had the flows failed, the update would come again and must find its
            # token. Should this fail, it comes again too: the engine dedupes the press.
            await self._redeem(query.data or "", chat, spend=True)

    async def _redeem(self, token: str, chat: callbacks.Chat, *, spend: bool) -> str | None:
        """The button's choice (``callbacks.redeem``): first only looked at (its statement
        rolled back), then spent once the flows have handled the press. The chat's alert
        button needs no database: it is derived from the chat, never stored nor spent."""
        if callbacks.is_alert(self.vault, token=token, chat=chat):
            return callbacks.ALERT
        async with self.sessions() as session:
            choice = await callbacks.redeem(
                session, self.vault, token=token, chat=chat, now=self.clock()
            )
            await (session.commit() if spend else session.rollback())
        return choice

    # --- outbound ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the sending side's connections (``run`` closes its own when it ends)."""
        await self.bot.request.shutdown()

    async def send(self, to: Address, message: Outbound) -> Delivered:
        sent: list[str] = []  # the ids of the parts this try put in the chat
        try:
            try:
                return await self._send(to.value, message, sent)
            except ChatMigrated as exc:  # the group is a supergroup now, under a new id
                new = str(exc.new_chat_id)
                await self._tell_moved(to.value, new)
                return await self._send(new, message, sent)
        except TelegramError as exc:
            # Those parts are in the chat: the retry sends the rest, and discreet mode
            # deletes them all (core.delivery keeps them with the outbox row).
            raise delivery_error(exc, tuple(sent)) from None

    async def _tell_moved(self, old: str, new: str) -> None:
        """Move the group's address now, in case the service message saying so never comes
        (it also may: the flows move a group once)."""
        if self.inbox is None:
            return
        try:
            await self.inbox(moved(f"migrated:{old}", old, new, self.clock()))
        except Exception as exc:  # the message itself still goes to the new chat
            log.warning("group move not recorded", extra={"error": type(exc).__name__})

    async def _send(self, chat_id: str, message: Outbound, sent: list[str]) -> Delivered:
        """Send the parts of ``message`` (its text's chunks, then its files) not yet in the chat
        (``message.sent_parts``: earlier tries'; ``sent``: this try's), adding each to ``sent``.
        Delivered names this try's parts: core.delivery adds the earlier ones."""
        if message.delete_message_ids:
            await self._delete(chat_id, message.delete_message_ids)
        if not (message.text or message.attachments or message.choices):
            return Delivered()  # an instruction only (a deletion, Signal's timer)
        chunks = split_text(message.text)
        done = len(message.sent_parts) + len(sent)  # 0 but for a retry that failed partway
        # The keyboard goes under the last chunk: its tokens only if that is still to send.
        markup = await self._markup(chat_id, message) if done < len(chunks) else None
        for i in range(done, len(chunks)):
            last = i == len(chunks) - 1
            # Never parse_mode: user-supplied text must not break delivery (R26).
            keyboard = markup if last else None
            sent.append(str(await self.bot.send_text(chat_id, chunks[i], keyboard)))
        for attachment in message.attachments[max(0, done - len(chunks)) :]:
            part = await self.bot.send_document(
                chat_id, attachment.data, filename=attachment.filename
            )
            sent.append(str(part.message_id))
        # Every part this try sent: core.delivery adds the earlier tries', so that discreet
        # mode deletes all of them.
        return Delivered(message_id=",".join(sent) or None)

    async def _markup(self, chat_id: str, message: Outbound) -> dict[str, Any]:
        tokens = []
        if message.choices:  # stored with the other sends' of the moment (group commit)
            tokens = await self.tokens.issue(
                chat=self.chat(chat_id),
                choices=[c.key for c in message.choices],
                now=self.clock(),
            )
        return markup(message, tokens)

    async def _delete(self, chat_id: str, ids: tuple[str, ...]) -> None:
        """Already gone is done; too old to delete (48 h) is refused for good: the messages
        stay on the phone, and the engine tells the desk (core.discreet.NOT_DELETED)."""
        numbers = [int(i) for i in ids]
        kept = 0
        for start in range(0, len(numbers), 100):  # deleteMessages takes up to 100
            batch = numbers[start : start + 100]
            try:
                await self.bot.delete_messages(chat_id, batch)
            except BadRequest as exc:
                if "not found" in exc.message.lower():  # the person deleted them already
                    log.info("messages already deleted", extra={"count": len(batch)})
                elif "can't be deleted" in exc.message.lower():  # the rest may still go
                    kept += len(batch)
                else:
                    raise
        if kept:
            log.warning("messages too old to delete", extra={"count": kept})
            raise DeliveryError(NOT_DELETED, permanent=True)


def _location(message: Message, *, edited: bool) -> Location:
    """A location; a live one's updates come as edits of its message, each with the period it
    may update for (``live_period``, seconds from the message's sending), which Telegram
    gives "for active live locations only": the edit without it is the last, sent when the
    defender stopped sharing. None comes when the period runs out."""
    where = message.location
    assert where is not None
    period = where.live_period
    if isinstance(period, timedelta):  # PTB_TIMEDELTA
        period = int(period.total_seconds())
    return Location(
        where.latitude,
        where.longitude,
        live=bool(period) or edited,  # only a live location's message is ever edited
        live_period=period or None,
        ended=edited and not period,
    )


def _unreachable(exc: BaseException) -> bool:
    """The database, or Telegram, could not be reached: every update fails alike for a while
    (core.db.unreachable, and Telegram's network errors; a BadRequest is none)."""
    if isinstance(exc, NetworkError | RetryAfter):
        return not isinstance(exc, BadRequest)
    return unreachable(exc)


async def _answer(query: CallbackQuery, text: str | None = None) -> None:
    """Stop the button's spinner. Its failure (a 5xx, "query is too old" after downtime) must
    not fail the update: a query too old to answer stays too old, and the press (the panic
    button, "I'm safe") must not be let go as poison over a spinner."""
    try:
        await query.answer(text)
    except TelegramError as exc:
        log.info("button not acknowledged", extra={"error": type(exc).__name__})
