"""A message Telegram gets in parts (a long text's chunks, then files) that fails partway: the
outbox keeps the ids of the parts already in the chat with the row, so the retry, by any
worker, sends only the rest, and discreet mode deletes every part that reached the chat.
bot/telegram.py against the Bot API stand-in, through the outbox; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram, split_text
from core import outbox
from core.crypto import Vault
from core.db import transaction
from core.dispatch import Dispatcher
from core.messages import Address, Attachment, Choice, DeliveryError, Inbound, Outbound
from core.models import ChannelAddress, Defender, OutboxMessage, OutboxState, Priority
from tests.bot.test_telegram import CHAT, Clock, api, clock, enrol, inbox, telegram
from tests.standins.telegram_api import Call, TelegramStandIn

__all__ = ["api", "clock", "inbox", "telegram"]  # the fixtures, shared with test_telegram
Sessions = async_sessionmaker[AsyncSession]
LONG = " ".join(f"w{n}" for n in range(2000))  # three chunks, each its own words
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FAILURES = {
    "5xx": (502, "Bad Gateway", None),
    "429": (429, "Too Many Requests: retry after 3", {"retry_after": 3}),
}


def fail_after(api: TelegramStandIn, method: str, accepted: int, how: str = "5xx") -> None:
    """The next call of ``method`` after its ``accepted``-th success fails, once."""
    seen = [0]
    status, description, parameters = FAILURES[how]

    def count(call: Call) -> None:
        if call.method == method:
            seen[0] += 1
            if seen[0] == accepted:
                api.fail_next(method, status, description, parameters)

    api.listeners.append(count)


async def queue(
    sessions: Sessions, vault: Vault, message: Outbound, *, discreet: bool = True
) -> None:
    """``message`` queued for the defender enrolled in CHAT."""
    await enrol(sessions, vault, CHAT)
    async with transaction(sessions) as s:
        await s.execute(update(Defender).values(discreet=discreet))
        where = (await s.execute(select(ChannelAddress))).scalar_one()
        await outbox.enqueue(
            s,
            vault,
            to=where,
            message=message,
            priority=Priority.P1,
            key="reply:report",
            now=T0,
            recipient="defender",
        )


def dispatcher(sessions: Sessions, vault: Vault, channel: Telegram, owner: str) -> Dispatcher:
    return Dispatcher(
        sessions, vault, {"telegram": channel}, owner=owner, limits={}, rng=lambda: 0
    )


@asynccontextmanager
async def another_worker(
    api: TelegramStandIn, sessions: Sessions, vault: Vault, clock: Clock
) -> AsyncIterator[Telegram]:
    """A second process's Telegram channel: nothing of the first one's memory."""
    channel = Telegram(
        token=api.token, api_url=api.base_url, sessions=sessions, vault=vault, clock=clock
    )

    async def receive(_inbound: Inbound) -> None:
        return None

    task = asyncio.create_task(channel.run(receive))
    await asyncio.wait_for(channel.ready.wait(), 10)
    try:
        yield channel
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def states(sessions: Sessions) -> list[OutboxState]:
    async with sessions() as s:
        return sorted((await s.execute(select(OutboxMessage.state))).scalars().all())


@pytest.mark.parametrize("how", ["5xx", "429"])
async def test_a_long_message_failing_partway_is_finished_and_then_deleted_whole(
    api: TelegramStandIn, telegram: Telegram, sessions: Sessions, vault: Vault, how: str
) -> None:
    """Part 2 of 3 fails (a 502, a flood wait): the retry sends parts 2 and 3 only, the
    keyboard under the last; discreet mode then deletes the three."""
    message = Outbound(LONG, choices=(Choice("ok", "OK"),), sensitive=True)
    await queue(sessions, vault, message)
    d = dispatcher(sessions, vault, telegram, "w1")
    fail_after(api, "sendMessage", 1, how)
    await d.drain(T0)
    assert [p["text"] for p in api.sent()] == split_text(LONG)[:1]
    await d.drain(T0 + timedelta(minutes=1))  # the retry
    assert [p["text"] for p in api.sent()] == split_text(LONG), "a part was sent twice"
    assert "inline_keyboard" in api.sent()[-1]["reply_markup"]
    await d.drain(T0 + timedelta(minutes=30))  # discreet mode's delay (10 minutes)
    assert await states(sessions) == [OutboxState.delivered] * 2  # the message, its deletion
    deletions = [d["message_ids"] for d in api.sent("deleteMessages")]
    assert deletions == [[1, 2, 3]]  # the stand-in's ids of the three parts


async def test_another_worker_resumes_from_the_first_unsent_part(
    api: TelegramStandIn,
    telegram: Telegram,
    sessions: Sessions,
    vault: Vault,
    clock: Clock,
) -> None:
    """The parts already sent are kept with the outbox row, not in a process's memory."""
    await queue(sessions, vault, Outbound(LONG, sensitive=True))
    fail_after(api, "sendMessage", 1)
    await dispatcher(sessions, vault, telegram, "w1").drain(T0)
    async with sessions() as s:
        row = (await s.execute(select(OutboxMessage))).scalar_one()
        stored = outbox.payload(vault, row).to_json()  # durable, encrypted
        assert stored.get("sent_parts") == ["1"], "the part sent is not kept with the row"
        assert row.state is OutboxState.pending
    async with another_worker(api, sessions, vault, clock) as other:
        d = dispatcher(sessions, vault, other, "w2")
        await d.drain(T0 + timedelta(minutes=1))
        assert [p["text"] for p in api.sent()] == split_text(LONG), "a part was sent twice"
        await d.drain(T0 + timedelta(minutes=30))
    assert [d["message_ids"] for d in api.sent("deleteMessages")] == [[1, 2, 3]]


async def test_files_failing_partway_are_finished_not_repeated(
    api: TelegramStandIn, telegram: Telegram, sessions: Sessions, vault: Vault
) -> None:
    """Evidence with three files, the second of which fails twice: each goes once."""
    files = tuple(Attachment(f"{n}.txt", "text/plain", b"x") for n in range(3))
    await queue(sessions, vault, Outbound("Evidence", attachments=files, sensitive=True))
    d = dispatcher(sessions, vault, telegram, "w1")
    fail_after(api, "sendDocument", 1)
    await d.drain(T0)
    api.fail_next("sendDocument", 502, "Bad Gateway")  # the retry fails before any part
    await d.drain(T0 + timedelta(minutes=1))
    await d.drain(T0 + timedelta(minutes=2))
    assert [p["text"] for p in api.sent()] == ["Evidence"]
    names = [d["document"].filename for d in api.sent("sendDocument")]
    assert names == ["0.txt", "1.txt", "2.txt"]
    await d.drain(T0 + timedelta(minutes=30))
    assert [d["message_ids"] for d in api.sent("deleteMessages")] == [[1, 2, 3, 4]]


async def test_the_parts_of_a_message_that_fails_for_good_are_deleted(
    api: TelegramStandIn, telegram: Telegram, sessions: Sessions, vault: Vault
) -> None:
    """Part 2 is refused for good: the row fails, and discreet mode still deletes part 1."""
    await queue(sessions, vault, Outbound(LONG, sensitive=True))
    d = dispatcher(sessions, vault, telegram, "w1")
    seen: list[int] = []

    def refuse(call: Call) -> None:
        if call.method == "sendMessage" and not seen:
            seen.append(1)
            api.fail_next("sendMessage", 400, "Bad Request: chat not found")

    api.listeners.append(refuse)
    await d.drain(T0)
    await d.drain(T0 + timedelta(minutes=30))
    assert len(api.sent()) == 1
    assert [d["message_ids"] for d in api.sent("deleteMessages")] == [[1]]
    assert await states(sessions) == [OutboxState.delivered, OutboxState.failed]


async def test_the_channel_reports_the_parts_sent_and_skips_those_sent_before(
    api: TelegramStandIn, telegram: Telegram
) -> None:
    to = Address("telegram", str(CHAT))
    fail_after(api, "sendMessage", 2)
    with pytest.raises(DeliveryError) as failed:
        await telegram.send(to, Outbound(LONG))
    assert failed.value.sent == ("1", "2") and not failed.value.permanent
    delivered = await telegram.send(to, Outbound(LONG, sent_parts=failed.value.sent))
    assert delivered.message_id == "3"  # only this try's: core.delivery adds the rest
    assert [p["text"] for p in api.sent()] == split_text(LONG)


def test_a_message_sent_whole_carries_nothing_more() -> None:
    """The hot path's payload is unchanged; the parts sent round-trip through the outbox."""
    assert len(split_text(LONG)) == 3
    assert Outbound("hi").to_json() == {"text": "hi"}
    resumed = Outbound(LONG, sent_parts=("1", "2"))
    assert Outbound.from_json(resumed.to_json()) == resumed
    assert DeliveryError("x").sent == ()
