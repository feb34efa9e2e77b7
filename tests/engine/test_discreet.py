"""Discreet mode through the outbox: the bot's sensitive messages to a defender who turned
discreet mode on are deleted after the defender's delay, by a deletion row queued in the same
transaction that marks them delivered. Clock-controlled; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import checkins, outbox
from core.crypto import Vault
from core.db import transaction
from core.defenders import save_settings
from core.delivery import MAX_ATTEMPTS, record
from core.discreet import deletion_key
from core.dispatch import Dispatcher
from core.messages import Address, Delivered, DeliveryError, Outbound
from core.models import (
    AlertEvent,
    ChannelAddress,
    CheckIn,
    OutboxMessage,
    OutboxState,
    Priority,
)
from core.sweep import Sweep
from tests.engine.conftest import T0, World, build_world
from tests.engine.standin import StandIn

Sessions = async_sessionmaker[AsyncSession]
SEC = timedelta(seconds=1)
ME = "d-quiet-heron-41"


class Recording(StandIn):
    """The engine's stand-in channel, keeping every message it delivered whole."""

    def __init__(self, name: str = "standin") -> None:
        super().__init__(name)
        self.messages: list[tuple[str, Outbound]] = []

    async def send(self, to: Address, message: Outbound) -> Delivered:
        await super().send(to, message)
        self.messages.append((to.value, message))
        return Delivered(message_id=f"m-{message.text}") if message.text else Delivered()

    def deleted(self) -> list[tuple[str, ...]]:
        return [m.delete_message_ids for _a, m in self.messages if m.delete_message_ids]


async def discreet_world(
    sessions: Sessions, vault: Vault, *, on: bool = True, **values: Any
) -> World:
    world = await build_world(sessions, vault, channel="standin")
    async with transaction(sessions) as s:
        defender = await world.defender(s)
        defender.discreet = on
        if values:
            save_settings(vault, defender, values)
    return world


def dispatcher(world: World, channel: StandIn) -> Dispatcher:
    return Dispatcher(
        world.sessions, world.vault, {"standin": channel}, owner="t", limits={}, rng=lambda: 0.5
    )


async def to_defender(world: World, key: str, message: Outbound) -> None:
    async with transaction(world.sessions) as s:
        where = (
            await s.execute(
                select(ChannelAddress).where(ChannelAddress.defender_id == world.defender_id)
            )
        ).scalar_one()
        await outbox.enqueue(
            s,
            world.vault,
            to=where,
            message=message,
            priority=Priority.P1,
            key=key,
            now=T0,
            recipient="defender",
        )


async def deletion_rows(world: World) -> list[OutboxMessage]:
    async with world.sessions() as s:
        stmt = select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith("del:"))
        return list((await s.execute(stmt)).scalars())


async def test_the_bots_sensitive_messages_go_after_the_defenders_delay(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, discreet_delay_s=120)
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:pin", Outbound("Your PIN is set.", sensitive=True))
    await to_defender(world, "reply:hello", Outbound("Hello."))
    await d.drain(T0)
    assert sorted(channel.to(ME)) == ["Hello.", "Your PIN is set."]
    [row] = await deletion_rows(world)  # queued with the delivery; none for the plain message
    assert row.idempotency_key == "del:reply:pin" and row.recipient == "defender"
    assert row.next_attempt_at.replace(tzinfo=T0.tzinfo) == T0 + 120 * SEC
    await d.drain(T0 + 119 * SEC)
    assert channel.deleted() == []  # not before the delay
    await d.drain(T0 + 121 * SEC)
    assert channel.deleted() == [("m-Your PIN is set.",)]
    [row] = await deletion_rows(world)
    assert row.state is OutboxState.delivered and row.payload_enc is None
    assert len(await deletion_rows(world)) == 1  # a deletion is not itself deleted


async def test_nothing_is_deleted_when_discreet_mode_is_off(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, on=False)
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:pin", Outbound("Your PIN is set.", sensitive=True))
    await d.drain(T0)
    await d.drain(T0 + 48 * 3600 * SEC)
    assert channel.deleted() == [] and await deletion_rows(world) == []


async def test_nothing_is_deleted_after_a_deletion_forced_with_the_duress_pin(
    sessions: Sessions, vault: Vault
) -> None:
    """R8: after a real "delete my data" the address is detached, so the last reply ("Your
    data is deleted") stays on the phone. Under duress (hidden) it must stay too: deleting it
    after the delay would tell whoever holds the phone which PIN they were given."""
    from core.defenders import hide

    world = await discreet_world(sessions, vault, discreet_delay_s=120)
    async with transaction(sessions) as s:
        await hide(s, defender=await world.defender(s))
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:gone", Outbound("Your data is deleted.", sensitive=True))
    await d.drain(T0)
    await d.drain(T0 + 48 * 3600 * SEC)
    assert channel.to(ME) == ["Your data is deleted."]
    assert channel.deleted() == [] and await deletion_rows(world) == []


async def test_the_delay_defaults_to_ten_minutes_and_stays_under_48_hours(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault)
    d = dispatcher(world, Recording())
    await to_defender(world, "reply:a", Outbound("a", sensitive=True))
    await d.drain(T0)
    async with transaction(sessions) as s:
        save_settings(vault, await world.defender(s), {"discreet_delay_s": 30 * 86400})
    await to_defender(world, "reply:b", Outbound("b", sensitive=True))
    await d.drain(T0)
    async with transaction(sessions) as s:
        save_settings(vault, await world.defender(s), {"discreet_delay_s": "soon"})
    await to_defender(world, "reply:c", Outbound("c", sensitive=True))
    await d.drain(T0)
    due = {
        r.idempotency_key: r.next_attempt_at.replace(tzinfo=T0.tzinfo) - T0
        for r in await deletion_rows(world)
    }
    assert due == {
        "del:reply:a": timedelta(minutes=10),
        "del:reply:b": timedelta(hours=47),
        "del:reply:c": timedelta(minutes=10),
    }


async def test_a_message_sent_twice_is_deleted_by_one_row(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, discreet_delay_s=0)
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:x", Outbound("x", sensitive=True))
    jobs = await d.claim(T0)
    attempts = await d.send_all(jobs, T0)
    for _ in range(2):  # a crash after the send: the lease expires and it is sent again
        async with transaction(sessions) as s:
            await s.execute(
                update(OutboxMessage).values(state=OutboxState.sending, lease_owner="t")
            )
            await record(s, vault, attempts, owner="t", now=T0, rng=lambda: 0.5)
    assert len(await deletion_rows(world)) == 1
    long_key = "a:" + "x" * 200
    assert deletion_key(long_key).startswith("del:") and len(deletion_key(long_key)) <= 160


async def test_failed_deletions_are_dropped_without_fallback_or_escalation(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, discreet_delay_s=60)
    channel = Recording()
    d, sweep = dispatcher(world, channel), Sweep(sessions, vault, owner="s")
    async with transaction(sessions) as s:  # a discreet reminder: sensitive, keyed "c:…"
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * SEC)
    await sweep.run(T0)
    await d.drain(T0)
    [row] = await deletion_rows(world)
    assert row.idempotency_key.startswith("del:c:")
    # The deletion meets a blocked bot: permanent, and it must not cut the grace short.
    channel.fail(ME, DeliveryError("forbidden", permanent=True))
    await d.drain(T0 + 61 * SEC)
    [row] = await deletion_rows(world)
    assert row.state is OutboxState.failed and row.payload_enc is None
    async with sessions() as s:
        checkin = (await s.execute(select(CheckIn))).scalar_one()
        assert checkin.next_action_at.replace(tzinfo=T0.tzinfo) > T0 + 61 * SEC
        assert (await s.execute(select(func.count()).select_from(AlertEvent))).scalar() == 0
        blocked = select(ChannelAddress).where(ChannelAddress.blocked_at.is_not(None))
        assert (await s.execute(blocked)).first() is None


async def test_a_deletion_failing_again_and_again_gives_up(
    sessions: Sessions, vault: Vault
) -> None:
    world = await discreet_world(sessions, vault, discreet_delay_s=60)
    channel = Recording()
    d = dispatcher(world, channel)
    await to_defender(world, "reply:x", Outbound("x", sensitive=True))
    await d.drain(T0)  # delivered; its deletion is due in a minute …
    channel.fail(ME, *[DeliveryError("HTTP 502")] * MAX_ATTEMPTS)
    now = T0
    for _ in range(MAX_ATTEMPTS + 2):  # … and fails every time, with backoff
        now += 3600 * SEC
        await d.drain(now)
    [row] = await deletion_rows(world)
    assert row.state is OutboxState.dead and row.attempts == MAX_ATTEMPTS
    async with sessions() as s:
        assert (await s.execute(select(func.count()).select_from(OutboxMessage))).scalar() == 2
        assert (await s.execute(select(func.count()).select_from(AlertEvent))).scalar() == 0


async def test_on_telegram_every_message_to_a_defender_goes_after_a_day(
    sessions: Sessions, vault: Vault
) -> None:
    """R12 outside discreet mode: Telegram keeps a chat's messages until someone deletes
    them (Signal's chats have their own timer), so the bot deletes each of its messages to
    a defender a day after delivering it, sensitive or not."""
    world = await build_world(sessions, vault, channel="telegram")
    channel = Recording("telegram")
    d = Dispatcher(sessions, vault, {"telegram": channel}, owner="t", limits={}, rng=lambda: 0.5)
    await to_defender(world, "reply:hello", Outbound("Hello."))
    await to_defender(world, "reply:pin", Outbound("Send your PIN.", sensitive=True))
    await d.drain(T0)
    rows = {r.idempotency_key: r for r in await deletion_rows(world)}
    assert sorted(rows) == ["del:reply:hello", "del:reply:pin"]
    for row in rows.values():
        assert row.next_attempt_at.replace(tzinfo=T0.tzinfo) == T0 + 24 * 3600 * SEC
    await d.drain(T0 + (24 * 3600 - 1) * SEC)
    assert channel.deleted() == []
    await d.drain(T0 + 24 * 3600 * SEC)
    assert sorted(channel.deleted()) == [("m-Hello.",), ("m-Send your PIN.",)]
