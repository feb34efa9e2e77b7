"""A desk notice its responder cannot get goes to another responder (R27: a 403 escalates)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update

from core import alert_handling, alerts
from core.db import transaction
from core.messages import DeliveryError
from core.models import AlertKind, ChannelAddress, Responder, Role
from core.sweep import Sweep
from tests.engine.conftest import T0, World, address, alert_of, build_world, timeline
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import dispatcher

MIN, HOUR = timedelta(minutes=1), timedelta(hours=1)
BLOCKED = DeliveryError("Forbidden: bot was blocked by the user", permanent=True)


async def raise_now(world: World, kind: AlertKind = AlertKind.panic) -> uuid.UUID:
    async with transaction(world.sessions) as s:
        defender = await world.defender(s)
        return (await alerts.raise_alert(s, world.vault, defender=defender, kind=kind, now=T0)).id


async def add_responder(world: World, name: str, *, on_duty: bool, last: int) -> None:
    """``last``: its id is the ``last``-th greatest (1: ffff…), after those of the world."""
    async with transaction(world.sessions) as s:
        responder = Responder(
            id=uuid.UUID(int=(1 << 128) - last),
            org_id=world.org_id,
            username=f"{name}-{uuid.uuid4().hex[:8]}",
            role=Role.responder,
            password_hash="x",
            on_duty=on_duty,
        )
        s.add(responder)
        await s.flush()
        s.add(address(world.vault, "standin", name, responder_id=responder.id))


async def kinds_of(world: World, alert_id: uuid.UUID) -> list[tuple[str, object]]:
    return [(e.kind, e.detail.get("recipient")) for e in await timeline(world, alert_id)]


async def test_a_panic_reaches_the_desk_when_the_only_on_duty_responder_blocked_the_bot(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    channel.fail("r0-quiet-heron-41", *[BLOCKED] * 20)  # on duty; r1 is not
    d, sweep = dispatcher(world, {"standin": channel}), Sweep(sessions, vault, owner="s")
    alert_id = await raise_now(world)
    await d.drain(T0)
    assert len(channel.to("r1-quiet-heron-41")) == 1  # at once, not at the next repeat
    assert ("delivery_fallback", "responder") in await kinds_of(world, alert_id)
    for k in (1, 2):  # the repeats: each one reaches r1 once, and r0 is still tried first
        await sweep.run(T0 + k * 15 * MIN)
        await d.drain(T0 + k * 15 * MIN)
        await d.drain(T0 + k * 15 * MIN + MIN)
    first, *repeats = channel.to("r1-quiet-heron-41")
    assert len(repeats) == 2 and all(t.startswith("Still not acknowledged") for t in repeats)
    assert len([a for a, _t in channel.calls if a == "r0-quiet-heron-41"]) == 3
    alert = await alert_of(world)
    assert alert is not None
    async with transaction(sessions) as s:  # r1 was alerted: r1 hears that it is over
        await alert_handling.resolve(
            s, vault, alert=alert, outcome="safe", actor="desk", now=T0 + HOUR
        )
    await d.drain(T0 + HOUR)
    assert len(channel.to("r1-quiet-heron-41")) == 4
    assert "recipient_unreachable" not in [k for k, _r in await kinds_of(world, alert_id)]


async def test_reachable_responders_on_duty_are_tried_before_the_others(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world)  # pages r0, the only one on duty
    # In the order of their ids (an order by id alone fails): r1, off-duty, late-on-duty.
    await add_responder(world, "late-on-duty", on_duty=True, last=1)  # joined after the page
    await add_responder(world, "off-duty", on_duty=False, last=2)
    async with transaction(sessions) as s:  # r1 (off duty) failed for good once already
        value = vault.address_index("standin", "r1-quiet-heron-41")
        mark = update(ChannelAddress).where(ChannelAddress.blind_index == value)
        await s.execute(mark.values(blocked_at=T0 - HOUR))
    channel.fail("r0-quiet-heron-41", BLOCKED)
    channel.fail("late-on-duty", BLOCKED)
    await d.drain(T0)
    tried = [a for a, _t in channel.calls]
    assert tried.index("r0-quiet-heron-41") < tried.index("late-on-duty") < tried.index("off-duty")
    assert len(channel.to("off-duty")) == 1 and channel.to("r1-quiet-heron-41") == []
    fallbacks = [k for k in await kinds_of(world, alert_id) if k[0] == "delivery_fallback"]
    assert len(fallbacks) == 2


async def test_when_no_responder_can_be_reached_the_timeline_says_so(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    channel.fail("r0-quiet-heron-41", *[BLOCKED] * 5)
    channel.fail("r1-quiet-heron-41", *[BLOCKED] * 5)
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world)
    await d.drain(T0)
    await d.drain(T0 + MIN)
    desk = [a for a, _t in channel.calls if a.startswith("r")]
    assert sorted(desk) == ["r0-quiet-heron-41", "r1-quiet-heron-41"]  # once each, no loop
    kinds = await kinds_of(world, alert_id)
    assert kinds.count(("delivery_fallback", "responder")) == 1
    assert kinds.count(("recipient_unreachable", "responder")) == 1


async def test_a_stand_in_is_never_the_device_of_a_defender_under_duress(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    async with transaction(sessions) as s:  # r1 is the defender's own chat too
        value = vault.address_index("standin", "r1-quiet-heron-41")
        mark = update(ChannelAddress).where(ChannelAddress.blind_index == value)
        await s.execute(mark.values(defender_id=world.defender_id))
    channel = StandIn("standin")
    channel.fail("r0-quiet-heron-41", BLOCKED)
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world, AlertKind.duress)
    await d.drain(T0)
    assert [a for a, _t in channel.calls if a == "r1-quiet-heron-41"] == []
    assert ("recipient_unreachable", "responder") in await kinds_of(world, alert_id)


async def test_a_duress_notice_never_falls_back_to_the_defenders_own_chat(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    async with transaction(sessions) as s:  # r0 is the defender too: their phone is r0's too
        shared = address(vault, "standin", "phone", responder_id=world.responder_ids[0])
        shared.defender_id, shared.preference = world.defender_id, 1
        s.add(shared)
    channel = StandIn("standin")
    channel.fail("r0-quiet-heron-41", BLOCKED)
    d = dispatcher(world, {"standin": channel})
    await raise_now(world, AlertKind.duress)
    await d.drain(T0)
    assert [a for a, _t in channel.calls if a == "phone"] == []
    assert len(channel.to("r1-quiet-heron-41")) == 1


async def test_no_stand_in_is_paged_while_the_step_reaches_the_desk_another_way(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """r0 blocked the bot, but r2, also on duty, has the notice: the off-duty r1 is not woken
    for it (nor for each repeat). Once every on-duty notice of a step fails, r1 is."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    await add_responder(world, "r2", on_duty=True, last=1)
    channel = StandIn("standin")
    channel.fail("r0-quiet-heron-41", *[BLOCKED] * 20)
    d, sweep = dispatcher(world, {"standin": channel}), Sweep(sessions, vault, owner="s")
    alert_id = await raise_now(world)
    await d.drain(T0)
    await sweep.run(T0 + 15 * MIN)  # a repeat
    await d.drain(T0 + 15 * MIN)
    assert len(channel.to("r2")) == 2
    assert channel.to("r1-quiet-heron-41") == []
    channel.fail("r2", *[BLOCKED] * 20)  # now r2 blocks the bot too
    await sweep.run(T0 + 30 * MIN)
    await d.drain(T0 + 30 * MIN)
    assert len(channel.to("r1-quiet-heron-41")) == 1
    assert ("delivery_fallback", "responder") in await kinds_of(world, alert_id)
