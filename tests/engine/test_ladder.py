"""Every step of the missed check-in ladder, with the clock in the test's hands."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from core import alert_handling, alerts, checkins
from core.db import transaction
from core.models import Alert, AlertKind, AlertState
from core.sweep import Sweep
from tests.engine.conftest import T0, World, alert_of, outbox, timeline

MIN = timedelta(minutes=1)


async def arm(world: World, due_in: timedelta) -> None:
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0 + due_in, now=T0)


async def test_it_walks_the_whole_ladder(world: World, sweep: Sweep) -> None:
    await arm(world, 60 * MIN)
    assert await sweep.run(T0 + 49 * MIN) == 0
    await sweep.run(T0 + 50 * MIN)  # T - 10 min
    sent = await outbox(world)
    assert [(m.person, m.priority) for m in sent] == [("defender", 2)]
    assert sent[0].text == "Faltan 10 minutos para tu confirmación."  # the defender's Spanish

    await sweep.run(T0 + 60 * MIN)  # T
    sent = await outbox(world)
    assert [(m.person, m.priority) for m in sent[1:]] == [("defender", 2)]

    await sweep.run(T0 + 74 * MIN)
    assert len(await outbox(world)) == 2
    await sweep.run(T0 + 75 * MIN)  # T + grace: alert, second reminder, contacts
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.triggered
    new = (await outbox(world))[2:]
    assert sorted(m.person for m in new) == ["contact:0", "contact:1", "defender"]
    assert all(m.priority == 1 for m in new)

    await sweep.run(T0 + 90 * MIN)  # + 15 min: the desk
    new = (await outbox(world))[5:]
    assert sorted(m.person for m in new) == ["responder:0", "webhook"]
    hook = next(m for m in new if m.person == "webhook")
    assert hook.body is not None and hook.body["type"] == "alert.triggered"

    await sweep.run(T0 + 105 * MIN)  # repeat until acknowledged
    new = (await outbox(world))[7:]
    assert sorted(m.person for m in new) == ["responder:0", "webhook"]
    repeat = next(m for m in new if m.person == "responder:0")
    assert repeat.text.startswith("Still not acknowledged")  # the desk reads English

    async with transaction(world.sessions) as s:
        await alert_handling.acknowledge(
            s,
            world.vault,
            alert=alert,
            responder_id=world.responder_ids[0],
            now=T0 + 106 * MIN,
            via="dashboard",
        )
    await sweep.run(T0 + 150 * MIN)
    assert len(await outbox(world)) == 10  # + the acknowledged webhook, no repeat
    await sweep.run(T0 + 166 * MIN)  # ack + 60 min: re-trigger
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.triggered
    new = (await outbox(world))[10:]
    assert sorted(m.person for m in new) == ["responder:0", "webhook"]
    kinds = [e.kind for e in await timeline(world, alert.id)]
    assert kinds == ["triggered", "step", "step", "step", "acknowledged", "step"]

    async with transaction(world.sessions) as s:
        assert await checkins.check_in(
            s, world.vault, defender=await world.defender(s), now=T0 + 170 * MIN
        )
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.resolved and alert.outcome == "safe"
    new = (await outbox(world))[12:]
    assert sorted(m.person for m in new) == ["contact:0", "contact:1", "responder:0", "webhook"]


async def test_it_sends_no_all_clear_when_the_check_in_was_made_under_duress(
    world: World, sweep: Sweep
) -> None:
    await arm(world, 60 * MIN)
    await sweep.run(T0 + 75 * MIN)  # missed: the alert is open, contacts were told
    before = len(await outbox(world))
    async with transaction(world.sessions) as s:
        defender = await world.defender(s)
        await alerts.raise_alert(
            s, world.vault, defender=defender, kind=AlertKind.duress, now=T0 + 80 * MIN
        )
        assert await checkins.check_in(s, world.vault, defender=defender, now=T0 + 80 * MIN)
    async with world.sessions() as s:
        query = select(Alert).where(Alert.kind == AlertKind.missed_checkin)
        missed = (await s.execute(query)).scalar_one()
    assert missed.state is AlertState.triggered  # not resolved as "safe"
    new = (await outbox(world))[before:]
    assert all(m.person != "defender" for m in new)  # nothing about it reaches the device
    texts = [m.text or "" for m in new if m.person.startswith("contact")]
    assert texts and not any("safe" in t.lower() for t in texts)  # contacts hear of duress only
    kinds = [e.kind for e in await timeline(world, missed.id)]
    assert "checked_in_under_duress" in kinds, kinds
