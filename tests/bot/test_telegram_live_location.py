"""A live location a discreet defender shares for an alert: kept while it shares (deleting its
message would stop it), then deleted from the chat once it no longer serves: when its live
period runs out, when the defender stops sharing, or when the alert is resolved, whichever
comes first, by a durable outbox row. The real PTB against the Bot API stand-in, through the
flow engine and the dispatcher, on a controlled clock; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core import alert_handling
from core.crypto import Vault, generate_org_keypair
from core.db import transaction
from core.defenders import new_address
from core.dispatch import Dispatcher
from core.models import Alert, AlertState, Defender, DefenderStatus, Organisation
from flows.engine import Engine
from tests.standins.telegram_api import TelegramStandIn

Sessions = async_sessionmaker[AsyncSession]
CHAT = 7319046690
FOREVER = 0x7FFFFFFF  # Telegram's live_period for "until I stop it"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def api(clock: Clock) -> AsyncIterator[TelegramStandIn]:
    stand_in = TelegramStandIn(clock=lambda: clock.now.timestamp())  # messages age with it
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def running(
    api: TelegramStandIn, sessions: Sessions, vault: Vault, clock: Clock
) -> AsyncIterator[Telegram]:
    channel = Telegram(
        token=api.token, api_url=api.base_url, sessions=sessions, vault=vault, clock=clock
    )
    task = asyncio.create_task(channel.run(Engine(sessions, vault, clock=clock).handle))
    await asyncio.wait_for(channel.ready.wait(), 10)
    yield channel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def dispatcher(sessions: Sessions, vault: Vault, channel: Telegram, clock: Clock) -> Dispatcher:
    """A dispatcher of its own each time: nothing but the database carries a deletion over."""
    return Dispatcher(
        sessions, vault, {"telegram": channel}, owner=uuid.uuid4().hex, limits={}, clock=clock
    )


async def wait_for(condition: Callable[[], object], seconds: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def handled(api: TelegramStandIn, update: dict[str, Any]) -> None:
    """The flows have taken ``update``: the poller confirmed it (our getUpdates loop)."""
    await wait_for(
        lambda: any(
            c.method == "getUpdates" and int(c.params.get("offset") or 0) > update["update_id"]
            for c in api.calls
        )
    )


def replies(api: TelegramStandIn) -> list[str]:
    return [m["text"] for m in api.sent() if int(m["chat_id"]) == CHAT]


def deleted(api: TelegramStandIn) -> set[int]:
    found: set[int] = set()
    for call in api.calls:
        if call.status == 200 and call.method == "deleteMessages":
            found.update(int(i) for i in call.params["message_ids"])
        elif call.status == 200 and call.method == "deleteMessage":
            found.add(int(call.params["message_id"]))
    return found


async def deliver(sessions: Sessions, vault: Vault, channel: Telegram, clock: Clock) -> None:
    """Everything due by the clock's time, sent (as a worker would, after a restart too)."""
    await dispatcher(sessions, vault, channel, clock).drain(clock.now)


async def defender(sessions: Sessions, vault: Vault, *, discreet: bool) -> uuid.UUID:
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        found = Defender(
            id=uuid.uuid4(),
            org_id=org.id,
            handle="calm-heron-3",
            status=DefenderStatus.active,
            discreet=discreet,
        )
        s.add(found)
        await s.flush()
        address = new_address(vault, "telegram", str(CHAT))
        address.defender_id = found.id
        s.add(address)
    return found.id


async def share_for_an_alert(
    api: TelegramStandIn,
    sessions: Sessions,
    vault: Vault,
    channel: Telegram,
    clock: Clock,
    *,
    live: int,
    discreet: bool = True,
) -> dict[str, Any]:
    """A panic, then a live location shared for it (``live`` seconds): its message."""
    await defender(sessions, vault, discreet=discreet)
    await handled(api, api.send_text(CHAT, "/sos"))
    await deliver(sessions, vault, channel, clock)
    assert replies(api)
    shared = api.send_location(CHAT, 4.61, -74.08, live=live)
    await handled(api, shared)
    await deliver(sessions, vault, channel, clock)
    assert any("Location received." in text for text in replies(api))
    message: dict[str, Any] = shared["message"]
    return message


async def live_for_the_desk(sessions: Sessions) -> bool:
    async with sessions() as s:
        alert = (await s.execute(select(Alert))).scalar_one()
        return alert.location_sealed is not None


async def test_a_live_location_is_kept_while_live_and_deleted_when_its_period_ends(
    api: TelegramStandIn, running: Telegram, sessions: Sessions, vault: Vault, clock: Clock
) -> None:
    shared = await share_for_an_alert(api, sessions, vault, running, clock, live=900)
    start = clock.now
    for minutes in (1, 5, 14):  # it updates; nothing deletes it while it shares
        clock.now = start + timedelta(minutes=minutes)
        await handled(api, api.move_location(shared, 4.62, -74.07, live=900))
        await deliver(sessions, vault, running, clock)
        assert shared["message_id"] not in deleted(api)
    assert await live_for_the_desk(sessions)
    clock.now = start + timedelta(minutes=15, seconds=1)  # the period is over: no update says so
    await deliver(sessions, vault, running, clock)  # a new worker: the row is in the database
    assert shared["message_id"] in deleted(api)


async def test_a_live_location_the_defender_stops_sharing_is_deleted_then(
    api: TelegramStandIn, running: Telegram, sessions: Sessions, vault: Vault, clock: Clock
) -> None:
    shared = await share_for_an_alert(api, sessions, vault, running, clock, live=3600)
    clock.now += timedelta(minutes=2)
    await handled(api, api.move_location(shared, 4.62, -74.07, live=3600))
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] not in deleted(api)
    clock.now += timedelta(minutes=1)
    # What Telegram sends when the sharing is stopped: a last edit without live_period.
    stop = api.move_location(shared, 4.63, -74.06, horizontal_accuracy=12.5)
    await handled(api, stop)
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] in deleted(api)


async def test_a_live_location_is_deleted_when_its_alert_is_resolved(
    api: TelegramStandIn, running: Telegram, sessions: Sessions, vault: Vault, clock: Clock
) -> None:
    shared = await share_for_an_alert(api, sessions, vault, running, clock, live=FOREVER)
    clock.now += timedelta(minutes=3)
    await handled(api, api.move_location(shared, 4.62, -74.07, live=FOREVER))
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] not in deleted(api)
    async with transaction(sessions) as s:  # the desk closes it while the defender shares
        alert = (await s.execute(select(Alert))).scalar_one()
        await alert_handling.resolve(
            s, vault, alert=alert, outcome="safe", actor="desk", now=clock.now
        )
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] in deleted(api)


async def test_a_live_location_shared_until_stopped_goes_before_telegram_s_48_hours(
    api: TelegramStandIn, running: Telegram, sessions: Sessions, vault: Vault, clock: Clock
) -> None:
    """Never stopped, the alert still open: deleted at 47 h, while Telegram still can."""
    shared = await share_for_an_alert(api, sessions, vault, running, clock, live=FOREVER)
    start = clock.now
    clock.now = start + timedelta(hours=46, minutes=59)
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] not in deleted(api)
    clock.now = start + timedelta(hours=47)
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] in deleted(api)


async def test_an_extended_live_location_is_kept_until_its_new_end(
    api: TelegramStandIn, running: Telegram, sessions: Sessions, vault: Vault, clock: Clock
) -> None:
    shared = await share_for_an_alert(api, sessions, vault, running, clock, live=900)
    start = clock.now
    clock.now = start + timedelta(minutes=10)  # the defender extends it to an hour
    await handled(api, api.move_location(shared, 4.62, -74.07, live=3600))
    clock.now = start + timedelta(minutes=30)
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] not in deleted(api)
    clock.now = start + timedelta(hours=1)
    await deliver(sessions, vault, running, clock)
    assert shared["message_id"] in deleted(api)


async def test_a_live_location_stays_for_a_defender_not_in_discreet_mode(
    api: TelegramStandIn, running: Telegram, sessions: Sessions, vault: Vault, clock: Clock
) -> None:
    shared = await share_for_an_alert(
        api, sessions, vault, running, clock, live=900, discreet=False
    )
    start = clock.now
    clock.now = start + timedelta(minutes=5)
    await handled(api, api.move_location(shared, 4.63, -74.06, horizontal_accuracy=9.0))
    async with transaction(sessions) as s:
        alert = (await s.execute(select(Alert))).scalar_one()
        await alert_handling.resolve(
            s, vault, alert=alert, outcome="safe", actor="desk", now=clock.now
        )
        assert alert.state is AlertState.resolved
    for hours in (0, 1, 47):
        clock.now = start + timedelta(hours=hours, minutes=5)
        await deliver(sessions, vault, running, clock)
    # Not in discreet mode: the location stays, the desk may still follow it; the chat's
    # other messages go a day after they were sent, as every chat's do (R12).
    assert deleted(api) and int(shared["message_id"]) not in deleted(api)
