"""The flow engine: one inbound event in; one state change and one reply out, in one transaction.

A channel hands every ``Inbound`` to ``Engine.handle``. For each event the engine:

1. takes the sender's lock (in this process) so one person's events run in order;
2. checks a message that is a PIN (whatever the conversation waits for: a duress PIN answering
   no question still counts), in a thread and outside any transaction (Argon2id is slow;
   holding SQLite's write lock meanwhile would stall everyone);
3. in one transaction: records the message id (a repeat is dropped), loads the conversation,
   lets ``flows.router`` run the state function, saves the conversation (a version check turns
   a concurrent writer into a retry, as does a deadlock PostgreSQL aborted it for) and
   queues the reply in the outbox, sent only once committed;
4. on an unexpected error, rolls back and answers in a fresh transaction; if the event was an
   alert trigger, the fallback raises the alert all the same (fail toward escalation, R27);
   if that fails too (the database is down), ``NotHandled`` tells the channel to keep the
   event: Telegram gets it again, Signal's adapter retries it (``core.messages.handed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from core import pins, reports, sqlite
from core.crypto import Vault
from core.db import backoff, retryable, transaction, unreachable
from core.defenders import lookup_index
from core.messages import Inbound, NotHandled
from core.models import ChannelAddress, Conversation, Defender, utcnow
from core.pins import Verdict
from core.ratelimit import Allowance
from core.text import pin
from flows import checkin, desk, report, rollcall, router, setup, store
from flows.router_alarms import alarm_shaped

log = logging.getLogger(__name__)
ATTEMPTS = 3
# Ingress per chat (SECURITY.md R21): a defender's burst (a report's 20 photos with their
# words, onboarding's answers) fits; a flood is not read past it, so that it cannot hold up
# everyone else's messages, a panic among them. An alert, a PIN or a location is read always.
INGRESS_BURST = 60
INGRESS_PER_MINUTE = 30
DRAFTS_KEPT = timedelta(days=1)  # unsent evidence outlives the report conversation (6 h)

PinCache = dict[tuple[str | None, str | None, str], Verdict]


class KeyedLocks:
    """An asyncio lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: bytes) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Engine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.vault = vault
        self.clock = clock
        self._locks = KeyedLocks()
        self._ingress = Allowance(INGRESS_BURST, INGRESS_PER_MINUTE)
        bind = sessions.kw.get("bind")
        sqlite = bind is not None and bind.dialect.name == "sqlite"
        # SQLite has one writer: queueing here beats many connections spinning on its lock.
        self._writers = asyncio.Semaphore(1 if sqlite else 16)

    async def handle(self, inbound: Inbound) -> None:
        """Handle one event from a channel; never raises for a bad event. Raises NotHandled
        when it could neither handle nor answer it (the database is down): the channel must
        not confirm such an event."""
        if inbound.group:
            await self._group(inbound)
            return
        if not inbound.private:
            log.info("ignored a message from a group chat", extra={"channel": inbound.channel})
            return
        index = await lookup_index(self.sessions, self.vault, inbound.channel, inbound.address)
        if not await self._allowed(index, inbound):
            return
        async with self._locks.hold(index):
            now = self.clock()
            cache: PinCache = {}
            for attempt in range(ATTEMPTS):
                try:
                    cache = await self._check_pin_early(index, inbound)
                    async with self._writers, transaction(self.sessions) as session:
                        await router.handle(self._context(session, inbound, index, cache, now))
                    return
                except Exception as exc:
                    if not conflict(exc):
                        log.exception("flow failed", extra={"channel": inbound.channel})
                        break
                    if attempt == ATTEMPTS - 1:
                        log.exception("conversation kept changing under us")
                        break
                    await self._again(exc, attempt)
            await self._fallback(inbound, index, now, cache)

    async def _allowed(self, index: bytes, inbound: Inbound) -> bool:
        """Whether the chat is within its allowance, or this is an alarm (R21). A refused
        message is let go unread; the chat is told (``router.too_fast``) once in a while."""
        now = self.clock()
        if self._ingress.take(index, now.timestamp()) or alarm_shaped(inbound):
            return True
        if self._ingress.tell(index, now.timestamp()):
            log.warning(
                "a chat is over its allowance: not read", extra={"channel": inbound.channel}
            )
            async with self._locks.hold(index):
                try:
                    async with self._writers, transaction(self.sessions) as session:
                        await router.too_fast(self._context(session, inbound, index, {}, now))
                except Exception:  # let go anyway: it was not to be read
                    log.exception(
                        "could not answer a chat over its allowance",
                        extra={"channel": inbound.channel},
                    )
        return False

    async def _group(self, inbound: Inbound) -> None:
        """The desk's responder group: its commands only; anything else is never stored."""
        if not desk.wanted(inbound):
            return
        index = await lookup_index(self.sessions, self.vault, inbound.channel, inbound.address)
        async with self._locks.hold(index):
            now = self.clock()
            for attempt in range(ATTEMPTS):
                try:
                    async with self._writers, transaction(self.sessions) as session:
                        event = store.Event(session, self.vault, inbound, index, now, None)
                        await desk.handle_group(event)
                    return
                except Exception as exc:
                    if not conflict(exc):
                        log.exception(
                            "desk group command failed", extra={"channel": inbound.channel}
                        )
                        return
                    if attempt == ATTEMPTS - 1:
                        log.exception("desk group command kept conflicting")
                        return
                    await self._again(exc, attempt)

    @staticmethod
    async def _again(exc: Exception, attempt: int) -> None:
        """Before the next attempt: PostgreSQL aborted the transaction for another's sake
        (a deadlock): a short jittered wait lets that one finish."""
        if retryable(exc):
            log.warning(
                "transaction aborted by the database; running it again",
                extra={"attempt": attempt + 1},
            )
            await backoff(attempt)

    def _context(
        self,
        session: AsyncSession,
        inbound: Inbound,
        index: bytes,
        cache: PinCache,
        now: datetime,
    ) -> store.Event:
        async def checker(defender: Defender, typed: str) -> Verdict:
            key = (defender.cancel_pin_hash, defender.duress_pin_hash, typed)
            if key not in cache:  # the PINs changed since the early check: rare
                cache[key] = await asyncio.to_thread(pins.check, *key, self.vault.keyring.pepper)
            return cache[key]

        return store.Event(session, self.vault, inbound, index, now, checker)

    async def _check_pin_early(self, index: bytes, inbound: Inbound) -> PinCache:
        """Argon2id before the transaction (SQLite: before the one writer's turn, which every
        other defender's message waits for): the message when it is shaped like a PIN, and
        a code phrase's digits when one is being set (``setup.pin_looks``)."""
        text = inbound.text or ""
        typed = pin(text)
        if inbound.forwarded or (typed is None and not setup.has_digits(text)):
            return {}
        # Any state: a PIN answering no question still raises the duress alert
        # (router_alarms.idle_pin); edited too: a report's account corrected to a PIN keeps
        # it out (Context.is_a_pin).
        query = (
            select(
                Defender.cancel_pin_hash,
                Defender.duress_pin_hash,
                Conversation.flow,
                Conversation.state,
            )
            .join(ChannelAddress, ChannelAddress.defender_id == Defender.id)
            .outerjoin(Conversation, Conversation.defender_id == Defender.id)
            .where(ChannelAddress.channel == inbound.channel, ChannelAddress.blind_index == index)
        )
        async with self.sessions() as session:
            row = (await session.execute(query)).first()
        if row is None or (row.cancel_pin_hash is None and row.duress_pin_hash is None):
            return {}
        looks = {typed} if typed is not None else set()
        phrase = setup.pin_looks(text) if (row.flow, row.state) in setup.PHRASE_STATES else ()
        if len(phrase) <= setup.PIN_LOOKS:  # more: refused unchecked (setup._save_phrase)
            looks.update(phrase)
        pepper, found = self.vault.keyring.pepper, {}
        for each in sorted(looks):
            key = (row.cancel_pin_hash, row.duress_pin_hash, each)
            found[key] = await asyncio.to_thread(pins.check, *key, pepper)
        return found

    async def _fallback(
        self, inbound: Inbound, index: bytes, now: datetime, cache: PinCache
    ) -> None:
        """Answer (and raise a requested alert) after an error; when even that fails, the
        event was not handled: NotHandled tells the channel not to confirm it (R27), so it
        comes again (the message id was not recorded: the retry is handled afresh)."""
        try:
            async with self._writers, transaction(self.sessions) as session:
                await router.fallback(self._context(session, inbound, index, cache, now))
        except Exception as exc:
            log.exception("fallback failed too", extra={"channel": inbound.channel})
            raise NotHandled(transient=unreachable(exc) or retryable(exc)) from None


def conflict(exc: BaseException) -> bool:
    """An error that running the whole transaction again may cure: a concurrent writer took
    the message id or the conversation's version first, or PostgreSQL aborted the transaction
    (a deadlock, a serialization failure: ``core.db.retryable``). Everything it wrote was
    rolled back, and its replies with it: they wait in the outbox, sent only once committed."""
    return isinstance(exc, IntegrityError | StaleDataError) or retryable(exc)


async def housekeeping(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """The periodic part (a scheduler calls it every few minutes): abandoned conversations
    lose their data, message ids older than 72 h are forgotten, evidence of reports never sent
    is deleted. Returns how many conversations were closed. Correctness never depends on it:
    an expired conversation is also noticed when the next message arrives.

    Its statements run on the SQLite driver's thread (``off_loop``): deleting however many
    rows are due (50,000 message ids: 160 ms) must not stop the loop the bots and, in
    `amparo serve`, the escalation engine run on."""
    async with transaction(sessions) as session, sqlite.off_loop(session):
        closed = await store.expire(session, now=now)
        await store.forget_seen(session, now=now)
        drafting = select(Conversation.defender_id).where(
            # a report being written, or set aside for an "I'm safe" (router_states.aside)
            Conversation.flow.in_((report.NAME, checkin.NAME, rollcall.NAME)),
            Conversation.expires_at > now,
            Conversation.defender_id.is_not(None),  # NOT IN with a NULL would keep everything
        )
        await reports.purge_drafts(session, before=now - DRAFTS_KEPT, keep=drafting)
    return closed
