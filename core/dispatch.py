"""The dispatcher: one loop delivering every outbox row, P0 first, outside any transaction.

1. Claim (one transaction): lease the most urgent due rows of the channels this process can
   reach (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), decrypt payloads and addresses; commit.
2. Send, with per-channel and per-recipient rate limits; each send has a timeout. A pass
   never waits long for a rate limit (``HORIZON_S``): what cannot go soon is deferred, so a
   broadcast draining at 30 messages/s never holds a panic back for a whole batch.
3. Record (one transaction, fenced by our lease): delivered (payload shredded), retry later,
   or fall back (``core.delivery``).

Passes overlap (up to ``PASSES``). A desk's webhook does not hold its pass: a receiver slow
to answer (up to the client's timeout) must never hold back a notice to a person, so webhook
sends are sent and recorded apart, at most ``HOOK_SENDS`` at once (beyond that, webhook rows
wait in the queue). A commit that queued rows wakes the loop at once
(``core.wakeup``); otherwise it polls every ``idle_s`` for rows queued by other processes and
retries coming due. A crash between 1 and 3
leaves leases that expire: the row is sent again with the same idempotency key (unless it
was withdrawn meanwhile: ``outbox.handed_back``). A stop
(SIGTERM, a deploy) is not a crash: passes still sending get ``stop_grace_s`` to finish and
record, and whatever this process still holds is handed back at once, not after ``lease_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import aiohttp
from sqlalchemy import ColumnElement, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import metrics, outbox, wakeup, webhooks, withdrawals
from core.claims import locked, write_lock
from core.crypto import CryptoError, Vault
from core.db import retried, transaction
from core.delivery import PAUSED, Attempt, record
from core.messages import Address, Channel, DeliveryError, Outbound
from core.models import ChannelAddress, OutboxMessage, OutboxState, Priority, Webhook
from core.proxies import Proxies
from core.ratelimit import Bucket, Limit, Spacing, configured

log = logging.getLogger("amparo.dispatch")
WEBHOOK = "webhook"
# A pass never holds a send back longer than this for a channel's rate limit: rows beyond it
# go back to the queue (deferred), so a P0 queued meanwhile waits for at most one short pass.
HORIZON_S = 0.2
# Passes in flight at once: a P0 queued while earlier passes send is claimed at once, not
# after them (claimed rows are leased, so passes never overlap on a row).
PASSES = 2
# Webhook sends in flight at once, apart from the passes (each up to the client's timeout).
HOOK_SENDS = 16


PAUSED_WAIT_S = 3600.0  # a paused webhook's events are looked at again hourly, or on resume
BEHIND_WAIT_S = 1.0  # an all-clear behind its alarm (core.withdrawals.behind_alarms) looks again
# An endpoint paused longer than this was abandoned, not under repair: its older events are
# given up (dead: listed for the desk and replayable until retention removes them).
PAUSED_HOLD = timedelta(days=7)
STOP_GRACE_S = 5.0  # within the 10 s a container runtime waits between SIGTERM and SIGKILL


# The claim's statements, built once with bound parameters (now, names): the dispatcher
# claims after every commit that queued rows, and building them anew cost more than the probe.
# One per priority: each reads the pending index (state, priority, next_attempt_at) from its
# start up to now, so rows due later (a day's deletions of Telegram chats, R12) are never
# read; one statement ordered by priority read every one of them whenever fewer were due.
PRIORITIES = tuple(int(p) for p in Priority)


def _waiting(priority: int) -> ColumnElement[bool]:
    return (
        (OutboxMessage.state == OutboxState.pending)
        & (OutboxMessage.priority == priority)
        & OutboxMessage.channel.in_(bindparam("names", expanding=True))
    )


def _due(priority: int) -> ColumnElement[bool]:
    return _waiting(priority) & (OutboxMessage.next_attempt_at <= bindparam("now"))


def _levels(top: int | None) -> tuple[int, ...]:
    return tuple(p for p in PRIORITIES if top is None or p <= top)


_EXPIRED = (OutboxMessage.state == OutboxState.sending) & (
    OutboxMessage.lease_until < bindparam("now")
)


def _first(priority: int) -> ColumnElement[bool]:
    # The earliest due row, not "does a due row exist": PostgreSQL, taking state, priority and
    # time as independent, can expect so many due rows that a sequential scan "finds one
    # sooner", and it drops an order inside EXISTS. Ordered by the index's last column, the
    # range up to now is the only cheap plan; bounded by now, it never walks rows due later.
    earliest = select(OutboxMessage.next_attempt_at).where(_due(priority))
    return earliest.order_by(OutboxMessage.next_attempt_at).limit(1).scalar_subquery().is_not(None)


_PROBE = {  # idle: an index probe a priority, and one for expired leases; no write lock taken
    top: select(
        *(_first(p) for p in _levels(top)),
        select(OutboxMessage.id).where(_EXPIRED).limit(1).exists(),
    )
    for top in (None, int(Priority.P0))
}
_RELEASE_EXPIRED = (  # one withdrawn while its dispatcher had it is withdrawn, not sent
    update(OutboxMessage)
    .where(_EXPIRED)
    .values(outbox.handed_back())
    .execution_options(synchronize_session=False)
)


@dataclass
class Job:
    row_id: uuid.UUID
    channel: str
    address_id: uuid.UUID | None
    message: Outbound | None = None
    to: Address | None = None
    hook: Webhook | None = None
    row: OutboxMessage | None = None
    broken: str | None = None  # cannot be sent at all (undecryptable, address gone)
    paused: bool = False  # a paused webhook: held, not given up (resuming brings it forward)
    behind: bool = False  # an all-clear whose alarm to the same person has not gone yet


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        channels: Mapping[str, Channel],
        *,
        owner: str,
        http: aiohttp.ClientSession | None = None,
        limits: Mapping[str, Limit] | None = None,  # None: from the settings
        batch: int = 32,
        lease_s: float = 60.0,
        send_timeout_s: float = 30.0,
        idle_s: float = 1.0,
        stop_grace_s: float = STOP_GRACE_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.sessions, self.vault, self.channels, self.owner = sessions, vault, channels, owner
        self.http, self.batch, self.lease_s = http, batch, lease_s
        self.proxies = Proxies()
        # A send outliving its lease could be claimed and sent again by another dispatcher.
        self.send_timeout_s = min(send_timeout_s, lease_s / 2)
        self.idle_s, self.clock, self.rng = idle_s, clock, rng
        self.stop_grace_s = stop_grace_s
        limits = configured() if limits is None else limits
        self.buckets = {n: Bucket(lim.per_channel) for n, lim in limits.items() if lim.per_channel}
        self.spacing = {
            n: Spacing(lim.per_recipient) for n, lim in limits.items() if lim.per_recipient
        }
        self.names = [*channels, *([WEBHOOK] if http is not None else [])]
        self._wake = asyncio.Event()
        self._refill: float | None = None  # seconds until a rate-limited channel can send
        self._hooks = 0  # webhook sends claimed and not yet recorded
        self._pick = {
            p: select(OutboxMessage.id, OutboxMessage.channel)
            .where(_due(p))
            .order_by(OutboxMessage.next_attempt_at)
            .limit(batch)
            for p in PRIORITIES
        }

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        loop = asyncio.get_running_loop()
        stop = wakeup.subscribe(wakeup.OUTBOX, wakeup.event_setter(loop, self._wake))
        passes = asyncio.Semaphore(PASSES)
        urgent = asyncio.Semaphore(1)  # P0 only, while every pass is sending
        flying: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                # A slow channel can hold a pass for send_timeout_s: a P0 never waits for it.
                lane, top = passes, None
                if passes.locked() and not urgent.locked():
                    lane, top = urgent, Priority.P0
                await lane.acquire()
                jobs: list[Job] = []
                try:
                    jobs = await self.claim(now := self.clock(), top=top)
                except Exception:  # a database hiccup must not end delivery
                    log.exception("dispatch failed; retrying")
                hooks = [j for j in jobs if j.channel == WEBHOOK]
                if hooks:  # sent and recorded apart: a slow receiver holds no pass
                    self._hooks += len(hooks)
                    flying.add(task := asyncio.create_task(self._deliver(hooks, now)))
                    task.add_done_callback(flying.discard)
                    task.add_done_callback(partial(self._hooks_done, len(hooks)))
                if people := [j for j in jobs if j.channel != WEBHOOK]:
                    flying.add(task := asyncio.create_task(self._deliver(people, now)))
                    task.add_done_callback(flying.discard)
                    task.add_done_callback(partial(self._freed, lane))
                else:
                    lane.release()
                if len(jobs) < self.batch:
                    idle = min(self.idle_s, self._refill or self.idle_s)
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the wake-up
                    # and drops a stop (SIGTERM) that lands in the same loop turn, and the
                    # loop would never end.
                    with suppress(TimeoutError):
                        async with asyncio.timeout(idle):
                            await self._wake.wait()
        finally:
            stop()
            await self._stop(flying)

    async def _stop(self, flying: set[asyncio.Task[None]]) -> None:
        """Let passes finish for a moment, then hand back every row this process holds: after
        a restart a panic notice goes at once, not when its lease runs out. A row whose send
        was cut short may have arrived: it goes again under the same idempotency key."""
        if flying:
            _, late = await asyncio.wait(set(flying), timeout=self.stop_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        held = (OutboxMessage.lease_owner == self.owner) & (
            OutboxMessage.state == OutboxState.sending
        )
        try:
            async with transaction(self.sessions) as s:
                handed = await s.execute(
                    update(OutboxMessage)
                    .where(held)
                    .values(outbox.handed_back())  # what was withdrawn meanwhile stays so
                    .execution_options(synchronize_session=False)
                )
            if count := int(getattr(handed, "rowcount", 0) or 0):
                log.info("handed back unsent messages", extra={"rows": count})
        except Exception as exc:  # the database is gone too: the leases will expire
            log.warning("could not hand back leases", extra={"error": type(exc).__name__})

    def _freed(self, lane: asyncio.Semaphore, _task: asyncio.Task[None]) -> None:
        lane.release()
        self._wake.set()  # a pass is free: claim at once, not after the idle wait

    def _hooks_done(self, n: int, _task: asyncio.Task[None]) -> None:
        self._hooks -= n
        self._wake.set()  # room for webhook rows that waited

    async def _deliver(self, jobs: list[Job], now: datetime) -> None:
        try:
            attempts = await self.send_all(jobs, now)
            await self._record(attempts, now)
        except Exception:
            log.exception("recording deliveries failed; the leases will expire")

    async def _record(self, attempts: list[Attempt], now: datetime) -> None:
        """What the sends came to, in one transaction. One PostgreSQL aborts for a deadlock
        is run again (``core.db.retried``): given up, the leases would expire and what was
        delivered would be sent again. It is fenced by our lease and rereads every row."""
        await retried(partial(self._recording, attempts, now), what="dispatch record")

    async def _recording(self, attempts: list[Attempt], now: datetime) -> None:
        async with transaction(self.sessions) as session:
            await record(session, self.vault, attempts, owner=self.owner, now=now, rng=self.rng)

    async def drain(self, now: datetime) -> int:
        """Dispatch until nothing is due at ``now`` (tests drive the clock)."""
        total = 0
        while (n := await self.dispatch_once(now)) > 0:
            total += n
        return total

    async def dispatch_once(self, now: datetime) -> int:
        """One pass: claim, send, record (``run`` overlaps passes; tests take them in turn)."""
        jobs = await self.claim(now)
        if jobs:
            await self._record(await self.send_all(jobs, now), now)
        return len(jobs)

    def ready(self) -> list[str]:
        """The channels that may send now: a rate-limited one out of budget waits its turn, and
        webhooks wait while ``HOOK_SENDS`` of them are in flight."""
        names, self._refill = [], None
        for name in self.names:
            if name == WEBHOOK and self._hooks >= HOOK_SENDS:
                continue  # woken when one is recorded
            bucket = self.buckets.get(name)
            if bucket is None:
                names.append(name)
                continue
            # Wait for a worthwhile chunk (a horizon's worth): not one row per pass.
            need = min(float(self.batch), max(1.0, bucket.rate * HORIZON_S))
            left = bucket.available(HORIZON_S)
            if left >= need:
                names.append(name)
            else:
                wait = (need - left) / bucket.rate
                self._refill = wait if self._refill is None else min(self._refill, wait)
        return names

    async def claim(self, now: datetime, top: int | None = None) -> list[Job]:
        """Lease the next batch of due rows (of priority ``top`` or more urgent, if given)."""
        names = self.ready()
        if not names:
            return []
        params = {"now": now, "names": names}
        async with self.sessions() as reader:
            *due, has_expired = (await reader.execute(_PROBE[top], params)).one()
        if not (any(due) or has_expired):
            return []
        # The priorities the probe found due; every one when expired leases put rows back.
        levels = [p for p, found in zip(_levels(top), due, strict=True) if found or has_expired]
        # Run again if PostgreSQL aborts it for a deadlock: nothing of it outlives a rollback.
        claiming = partial(self._claim, now, params, levels=levels, expired=has_expired)
        return await retried(claiming, what="dispatch claim")

    async def _claim(
        self, now: datetime, params: dict[str, object], *, levels: list[int], expired: bool
    ) -> list[Job]:
        async with transaction(self.sessions) as s:
            if expired:  # a dispatcher died while sending: those rows are sent again
                await s.execute(_RELEASE_EXPIRED, params)
            await write_lock(s)  # SQLite: before reading what this transaction updates
            # No more rows of a rate-limited channel than it can send within the horizon.
            budget = {n: int(b.available(HORIZON_S)) for n, b in self.buckets.items()}
            budget[WEBHOOK] = HOOK_SENDS - self._hooks
            ids, read = [], 0
            for level in levels:  # the most urgent first, each oldest first
                if read >= self.batch:
                    break
                pick = locked(self._pick[level], s, skip=True)
                for row_id, channel in (await s.execute(pick, params)).all()[: self.batch - read]:
                    read += 1
                    if budget.get(channel, 1) >= 1:
                        ids.append(row_id)
                        if channel in budget:
                            budget[channel] -= 1
            if not ids:
                return []
            await s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(
                    state=OutboxState.sending,
                    lease_owner=self.owner,
                    lease_until=now + timedelta(seconds=self.lease_s),
                )
                .execution_options(synchronize_session=False)
            )
            stmt = (
                select(OutboxMessage, ChannelAddress, Webhook)
                .outerjoin(ChannelAddress, ChannelAddress.id == OutboxMessage.address_id)
                .outerjoin(Webhook, Webhook.id == OutboxMessage.webhook_id)
                .where(OutboxMessage.id.in_(ids))
                .order_by(OutboxMessage.priority, OutboxMessage.next_attempt_at)
            )
            jobs = [self._job(*r) for r in await s.execute(stmt)]
            rows = [j.row for j in jobs if j.row is not None]
            behind = await withdrawals.behind_alarms(s, rows)
            for job in jobs:
                job.behind = job.row_id in behind
            return jobs

    def _job(
        self, row: OutboxMessage, address: ChannelAddress | None, hook: Webhook | None
    ) -> Job:
        job = Job(row.id, row.channel, row.address_id, row=row, hook=hook)
        try:
            if row.channel == WEBHOOK:
                job.broken = None if hook is not None else "webhook_gone"
                job.paused = hook is not None and not hook.active
                return job
            raw = row.get(self.vault, "payload_enc")
            value = None if address is None else address.get_text(self.vault, "value_enc")
            if raw is None or value is None:
                job.broken = "nothing_to_send"
                return job
            job.message = Outbound.from_json(json.loads(raw))
            job.to = Address(row.channel, value)
        except (CryptoError, ValueError, KeyError):
            job.broken = "undecryptable"
        return job

    async def send_all(self, jobs: list[Job], now: datetime) -> list[Attempt]:
        """In priority order; concurrent sends, each after its channel's rate limit allows."""
        tasks: list[asyncio.Task[Attempt]] = []
        done: list[Attempt] = []
        for job in jobs:
            if job.broken is not None:
                done.append(Attempt(job.row_id, "permanent", job.message, job.broken))
                continue
            if job.paused and job.row is not None and now - job.row.created_at > PAUSED_HOLD:
                done.append(Attempt(job.row_id, "expired", error=PAUSED))
                continue
            if job.paused:  # not an attempt: the desk is fixing its receiver
                done.append(Attempt(job.row_id, "deferred", error=PAUSED, wait=PAUSED_WAIT_S))
                continue
            if job.behind:  # not an attempt: its alarm goes first
                done.append(Attempt(job.row_id, "deferred", wait=BEHIND_WAIT_S))
                continue
            spacing = self.spacing.get(job.channel)
            wait = spacing.wait(job.address_id) if spacing and job.address_id else 0.0
            if wait > 0:
                done.append(Attempt(job.row_id, "deferred", wait=wait))
                continue
            bucket = self.buckets.get(job.channel)
            delay = 0.0 if bucket is None else bucket.reserve()
            if delay > HORIZON_S:  # back to the queue: this pass must end soon
                assert bucket is not None
                bucket.give_back()
                done.append(Attempt(job.row_id, "deferred", wait=delay))
                continue
            tasks.append(asyncio.create_task(self.send_one(job, now, delay)))
        return done + list(await asyncio.gather(*tasks))

    async def send_one(self, job: Job, now: datetime, delay: float = 0.0) -> Attempt:
        sent_id, began = None, time.monotonic()
        if delay > 0:  # its slot under the channel's rate limit
            await asyncio.sleep(delay)
        try:
            async with asyncio.timeout(self.send_timeout_s):
                if job.channel == WEBHOOK:
                    assert self.http is not None and job.hook is not None and job.row is not None
                    proxy = self.proxies(job.hook.url)
                    await webhooks.post(self.http, self.vault, job.hook, job.row, now, proxy)
                else:
                    assert job.to is not None and job.message is not None
                    sent = await self.channels[job.channel].send(job.to, job.message)
                    sent_id = sent.message_id  # discreet mode deletes it later (core.delivery)
        except DeliveryError as exc:
            outcome = "permanent" if exc.permanent else "retry"
            metrics.delivered(job.channel, outcome)
            log.info("delivery failed", extra={"outbox": str(job.row_id), "outcome": outcome})
            elapsed = time.monotonic() - began
            error, after = str(exc)[:200], exc.retry_after
            return Attempt(
                job.row_id, outcome, job.message, error, after, elapsed=elapsed, parts=exc.sent
            )
        except Exception as exc:  # a channel's bug or a timeout: retry, never lose the message
            metrics.delivered(job.channel, "error")
            log.warning("send raised %s", type(exc).__name__, extra={"outbox": str(job.row_id)})
            elapsed = time.monotonic() - began
            return Attempt(job.row_id, "retry", job.message, type(exc).__name__, elapsed=elapsed)
        metrics.delivered(job.channel, "delivered")
        return Attempt(job.row_id, "delivered", job.message, sent_id=sent_id)
