"""The ladder's desk step, and panic and duress at once, also reach the responder group."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from core import alerts, checkins, desk_chat, notices
from core.db import transaction
from core.messages import Outbound
from core.models import AlertKind
from core.sweep import Sweep
from tests.engine.conftest import T0, World, alert_of, outbox

MIN = timedelta(minutes=1)
GROUP = "-100777"


async def link_group(world: World, channel: str = "telegram", chat: str = GROUP) -> None:
    async with transaction(world.sessions) as s:
        code, _ = await desk_chat.group_code(
            s, world.vault, org_id=world.org_id, created_by=None, actor="test", now=T0
        )
        org = await desk_chat.link_group(
            s, world.vault, code=code, channel=channel, group=chat, now=T0
        )
    assert org == world.org_id


async def raise_(world: World, kind: AlertKind) -> None:
    async with transaction(world.sessions) as s:
        await alerts.raise_alert(
            s, world.vault, defender=await world.defender(s), kind=kind, now=T0
        )


async def test_the_desk_step_and_its_repeats_post_to_the_group(world: World, sweep: Sweep) -> None:
    await link_group(world)
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - MIN)
    await sweep.run(T0 + 15 * MIN)  # alert opens: defender and contacts, not yet the desk
    assert "group" not in [m.person for m in await outbox(world)]
    await sweep.run(T0 + 30 * MIN)  # the desk
    posts = [m for m in await outbox(world) if m.person == "group"]
    assert len(posts) == 1 and "quiet-heron-41 missed a check-in" in posts[0].text
    assert posts[0].priority == 1
    await sweep.run(T0 + 45 * MIN)  # repeated until acknowledged
    posts = [m for m in await outbox(world) if m.person == "group"]
    assert len(posts) == 2 and posts[1].text.startswith("Still not acknowledged")
    assert len({p.key for p in posts}) == 2


@pytest.mark.parametrize("kind", [AlertKind.panic, AlertKind.duress])
async def test_panic_and_duress_reach_the_group_at_once(world: World, kind: AlertKind) -> None:
    await link_group(world)
    await raise_(world, kind)
    posts = [m for m in await outbox(world) if m.person == "group"]
    assert len(posts) == 1 and posts[0].priority == 0
    assert posts[0].text.startswith("EMERGENCY: quiet-heron-41")


async def test_no_group_no_post_and_unlinking_stops_them(world: World) -> None:
    await link_group(world)
    async with transaction(world.sessions) as s:
        assert await desk_chat.unlink_group(
            s, world.vault, org_id=world.org_id, actor="test", now=T0
        )
    await raise_(world, AlertKind.panic)
    assert "group" not in [m.person for m in await outbox(world)]


def test_the_group_post_carries_priority_code_and_the_way_to_act() -> None:
    alert_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    code = notices.short_code(alert_id)
    assert len(code) == 6 and code.isalnum() and code.isupper()
    base = notices.desk_alert("en", AlertKind.panic, "calm-otter-1", repeat=False)
    telegram = notices.desk_group("en", "telegram", alert_id=alert_id, priority=0, base=base)
    assert telegram.text == f"{base.text}\nPriority P0 · code {code}"
    assert [c.key for c in telegram.choices] == [
        f"desk:ack:{alert_id.hex}",
        f"desk:safe:{alert_id.hex}",
    ]
    signal = notices.desk_group("en", "signal", alert_id=alert_id, priority=0, base=base)
    assert signal.choices == ()
    assert signal.text.endswith(
        f"Reply ACK {code} to acknowledge, or SAFE {code} to resolve it as safe."
    )
    assert Outbound.from_json(telegram.to_json()) == telegram


async def test_the_group_post_has_the_short_code(world: World) -> None:
    await link_group(world)
    await raise_(world, AlertKind.panic)
    alert = await alert_of(world)
    assert alert is not None
    posts = [m for m in await outbox(world) if m.person == "group"]
    assert f"code {notices.short_code(alert.id)}" in posts[0].text
