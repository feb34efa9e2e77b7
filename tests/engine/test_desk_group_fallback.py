"""A post the responder group cannot get (the bot was removed, the group deleted) pages a
responder in their own chat when no responder's notice of that step reaches the desk."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from core.db import transaction
from core.messages import DeliveryError
from core.models import AlertKind, ChannelAddress, DeskGroup
from core.sweep import Sweep
from tests.engine.conftest import T0, World, build_world, timeline
from tests.engine.standin import StandIn
from tests.engine.test_desk_fallback import BLOCKED, raise_now
from tests.engine.test_desk_group import GROUP, link_group
from tests.engine.test_dispatch import dispatcher

MIN = timedelta(minutes=1)
KICKED = DeliveryError("Forbidden: bot was kicked from the supergroup chat", permanent=True)
GONE = DeliveryError("Bad Request: chat not found", permanent=True)
SLOW = DeliveryError("Timed out", permanent=False)
R0, R1 = "r0-quiet-heron-41", "r1-quiet-heron-41"  # r0 is on duty, r1 is not
PANIC = "EMERGENCY: quiet-heron-41 raised an emergency alert. Acknowledge it in the desk."


async def group_world(sessions, vault) -> tuple[World, StandIn]:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    await link_group(world, channel="standin")
    return world, StandIn("standin")


async def fallbacks(world: World, alert_id: uuid.UUID) -> list[dict[str, object]]:
    return [e.detail for e in await timeline(world, alert_id) if e.kind == "delivery_fallback"]


async def unreachable(world: World, alert_id: uuid.UUID) -> list[object]:
    events = await timeline(world, alert_id)
    return [e.detail.get("recipient") for e in events if e.kind == "recipient_unreachable"]


async def group_blocked(world: World) -> bool:
    async with world.sessions() as s:
        stmt = select(ChannelAddress.blocked_at).join(
            DeskGroup, DeskGroup.address_id == ChannelAddress.id
        )
        return (await s.execute(stmt)).scalar_one() is not None


async def test_a_panic_reaches_a_responder_when_the_group_fails_after_the_on_duty_one(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """r0 (on duty) blocked the bot while the group's post was still on its way, so nobody
    stood in for r0; then the group's post fails for good: r1 is paged, in their own chat."""
    world, channel = await group_world(sessions, vault)
    channel.fail(R0, *[BLOCKED] * 20)
    channel.fail(GROUP, SLOW, KICKED)
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world)
    await d.drain(T0)
    assert channel.to(R1) == []  # the group's post is still being tried
    await d.drain(T0 + MIN)
    assert channel.to(R1) == [PANIC]  # the desk's own words: the group's buttons work nowhere else
    (moved,) = await fallbacks(world, alert_id)
    assert moved["failed"] == "group" and moved["recipient"] == "responder"
    assert "group" not in await unreachable(world, alert_id)
    assert await group_blocked(world)  # as a responder's address that failed for good
    for later in (2, 5, 15):  # nothing more, and nothing twice
        await d.drain(T0 + later * MIN)
    assert channel.to(R1) == [PANIC] and len(await fallbacks(world, alert_id)) == 1


async def test_both_failing_in_one_pass_page_a_responder_once(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """The group's and r0's notices fail for good in the same pass, in whichever order."""
    world, channel = await group_world(sessions, vault)
    channel.fail(R0, *[BLOCKED] * 20)
    channel.fail(GROUP, *[GONE] * 20)
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world)
    await d.drain(T0)
    await d.drain(T0 + MIN)
    assert channel.to(R1) == [PANIC]
    assert len(await fallbacks(world, alert_id)) == 1


async def test_the_groups_failure_pages_nobody_who_already_has_the_step(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """r0 has the panic: the group's failure wakes nobody else, and says the group is gone."""
    world, channel = await group_world(sessions, vault)
    channel.fail(GROUP, *[KICKED] * 20)
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world)
    await d.drain(T0)
    await d.drain(T0 + MIN)
    assert channel.to(R0) == [PANIC] and channel.to(R1) == []
    assert await fallbacks(world, alert_id) == []
    assert await unreachable(world, alert_id) == ["group"]
    assert await group_blocked(world)


async def test_when_the_stand_in_fails_too_nothing_loops(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world, channel = await group_world(sessions, vault)
    channel.fail(R0, *[BLOCKED] * 20)
    channel.fail(R1, *[BLOCKED] * 20)
    channel.fail(GROUP, SLOW, *[KICKED] * 20)
    d, sweep = dispatcher(world, {"standin": channel}), Sweep(sessions, vault, owner="s")
    alert_id = await raise_now(world)
    for later in (0, 1, 2, 5):
        await d.drain(T0 + later * MIN)
    tried = [a for a, _t in channel.calls]
    assert tried.count(R0) == 1 and tried.count(R1) == 1 and tried.count(GROUP) == 2
    assert len(await fallbacks(world, alert_id)) == 1
    assert sorted(map(str, await unreachable(world, alert_id))) == ["responder", "responder"]
    await sweep.run(T0 + 15 * MIN)  # the repeat tries each of them once more, no more
    for later in (15, 16, 17, 20):
        await d.drain(T0 + later * MIN)
    tried = [a for a, _t in channel.calls]
    assert tried.count(R0) == 2 and tried.count(R1) == 2 and tried.count(GROUP) == 3


async def test_a_stand_in_for_the_group_is_never_the_device_under_duress(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world, channel = await group_world(sessions, vault)
    async with transaction(sessions) as s:  # r1 is the defender's own chat too
        value = vault.address_index("standin", R1)
        mark = update(ChannelAddress).where(ChannelAddress.blind_index == value)
        await s.execute(mark.values(defender_id=world.defender_id))
    channel.fail(R0, *[BLOCKED] * 20)
    channel.fail(GROUP, SLOW, *[KICKED] * 20)
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world, AlertKind.duress)
    for later in (0, 1, 2):
        await d.drain(T0 + later * MIN)
    assert [a for a, _t in channel.calls if a == R1] == []
    assert "group" in await unreachable(world, alert_id)


async def test_a_group_post_held_past_its_patience_pages_a_responder_and_still_goes(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """A long rate limit on the group with r0 unreachable: r1 is paged at once, once, and the
    group's post (its buttons, its code) still arrives when the limit passes."""
    world, channel = await group_world(sessions, vault)
    limited = DeliveryError("Too Many Requests", retry_after=600)
    channel.fail(R0, *[BLOCKED] * 20)
    channel.fail(GROUP, limited, limited)
    d = dispatcher(world, {"standin": channel})
    alert_id = await raise_now(world)
    for later in (0, 1, 11, 22):
        await d.drain(T0 + later * MIN)
    assert channel.to(R1) == [PANIC]
    (post,) = channel.to(GROUP)
    assert post.startswith(PANIC) and "code" in post
    (moved,) = await fallbacks(world, alert_id)
    assert moved["failed"] == "group" and moved["reason"] == "patience"


async def test_the_stand_in_reads_the_desk_notice_in_the_desks_language(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """The group posts in Spanish; its stand-in is a responder, paged in the responders'
    language as every responder's notice is, not in the group's words."""
    world, channel = await group_world(sessions, vault)
    async with transaction(sessions) as s:
        await s.execute(update(DeskGroup).values(locale="es"))
    channel.fail(R0, *[BLOCKED] * 20)
    channel.fail(GROUP, SLOW, KICKED)
    d = dispatcher(world, {"standin": channel})
    await raise_now(world)
    for later in (0, 1, 2):
        await d.drain(T0 + later * MIN)
    posted = [t for a, t in channel.calls if a == GROUP]
    assert posted and all("EMERGENCIA" in t for t in posted)  # the group's own language
    assert channel.to(R1) == [PANIC]
