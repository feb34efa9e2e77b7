"""Discreet mode against Telegram's 48-hour limit (SECURITY.md R12): a failing deletion is
never retried past the limit, and the desk hears of one not done by 47 h after the message
was sent, on the defender's open alert. Clock-controlled; SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import alerts
from core.crypto import Vault
from core.db import transaction
from core.discreet import NOT_DELETED
from core.messages import DeliveryError, Outbound
from core.models import AlertEvent, AlertKind, OutboxState
from tests.engine.conftest import T0, World
from tests.engine.test_discreet import (
    ME,
    Recording,
    deletion_rows,
    discreet_world,
    dispatcher,
    to_defender,
)

Sessions = async_sessionmaker[AsyncSession]
HOUR = timedelta(hours=1)
LIMIT = T0 + 48 * HOUR  # the message below is delivered at T0


async def panic(world: World) -> uuid.UUID:
    async with transaction(world.sessions) as s:
        defender = await world.defender(s)
        alert = await alerts.raise_alert(
            s, world.vault, defender=defender, kind=AlertKind.panic, now=T0
        )
        return alert.id


async def not_deleted(world: World, alert_id: uuid.UUID) -> list[tuple[datetime, str]]:
    async with world.sessions() as s:
        stmt = select(AlertEvent).where(
            AlertEvent.alert_id == alert_id, AlertEvent.kind == "delivery_dead"
        )
        return [
            (e.at.replace(tzinfo=T0.tzinfo), e.detail["reason"])
            for e in (await s.execute(stmt)).scalars()
        ]


def told_once_at(events: list[tuple[datetime, str]], at: datetime) -> bool:
    """One alarm, at ``at`` (give or take the send's own duration)."""
    [(when, reason)] = events
    return reason == "not_deleted" and abs(when - at) < timedelta(seconds=1)


async def due(world: World) -> datetime:
    [row] = await deletion_rows(world)
    return row.next_attempt_at.replace(tzinfo=T0.tzinfo)


async def test_a_failing_deletion_is_never_retried_past_48_hours_and_the_desk_hears_at_47(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, discreet_delay_s=46 * 3600)
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:pin", Outbound("Your PIN is set.", sensitive=True))
    await d.drain(T0)
    alert_id = await panic(world)
    await d.drain(T0)  # the alert's notices
    # Telegram asks for three hours' patience, again and again.
    channel.fail(ME, *[DeliveryError("rate limited", retry_after=3 * 3600.0)] * 5)
    tried = []
    for _ in range(5):
        at = await due(world)
        if at >= T0 + 50 * HOUR or (await deletion_rows(world))[0].state is OutboxState.dead:
            break
        tried.append(at)
        await d.drain(at)
    assert tried[0] == T0 + 46 * HOUR
    assert all(at < LIMIT for at in tried) and len(tried) == 3  # 46 h, 47 h, 47 h 45
    assert tried[1] == T0 + 47 * HOUR  # the alarm's hour, still failing: the desk is told …
    [row] = await deletion_rows(world)
    assert row.state is OutboxState.dead and row.payload_enc is None
    assert told_once_at(await not_deleted(world, alert_id), T0 + 47 * HOUR)  # … once
    assert channel.deleted() == []


async def test_a_deletion_refused_as_too_old_is_not_done_and_the_desk_hears_of_it(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, discreet_delay_s=60)
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:pin", Outbound("Your PIN is set.", sensitive=True))
    await d.drain(T0)
    alert_id = await panic(world)
    await d.drain(T0)
    channel.fail(ME, DeliveryError(NOT_DELETED, permanent=True))  # e.g. the engine was down
    await d.drain(T0 + 61 * HOUR)
    [row] = await deletion_rows(world)
    assert row.state is OutboxState.failed and row.delivered_at is None
    assert told_once_at(await not_deleted(world, alert_id), T0 + 61 * HOUR)


async def test_a_deletion_given_up_before_47_hours_is_told_too(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, discreet_delay_s=60)
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:pin", Outbound("Your PIN is set.", sensitive=True))
    await d.drain(T0)
    alert_id = await panic(world)
    await d.drain(T0)
    channel.fail(ME, *[DeliveryError("HTTP 502")] * 20)
    now = T0
    while (await deletion_rows(world))[0].state is OutboxState.pending:
        now = max(now, await due(world))
        await d.drain(now)
    [row] = await deletion_rows(world)
    assert row.state is OutboxState.dead and now < T0 + 47 * HOUR
    assert told_once_at(await not_deleted(world, alert_id), now)
