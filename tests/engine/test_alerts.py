"""Panic, duress, cancellation, acknowledgement by dedup key, locations: both backends."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from core import alert_handling, alert_updates, alerts, checkins, follow_ups, notices, webhooks
from core.crypto import open_sealed
from core.db import transaction
from core.escalation import Policy
from core.models import (
    AlertKind,
    AlertState,
    EscalationPolicy,
    OutboxMessage,
    OutboxState,
    Responder,
)
from core.sweep import Sweep
from tests.engine.conftest import T0, World, alert_of, outbox, timeline

MIN = timedelta(minutes=1)


async def raise_(world: World, kind: AlertKind, now=T0):  # type: ignore[no-untyped-def]
    async with transaction(world.sessions) as s:
        return await alerts.raise_alert(
            s, world.vault, defender=await world.defender(s), kind=kind, now=now
        )


async def test_it_sends_a_panic_to_the_desk_and_contacts_at_once(world: World) -> None:
    alert = await raise_(world, AlertKind.panic)
    sent = await outbox(world)
    assert sorted(m.person for m in sent) == ["contact:0", "contact:1", "responder:0", "webhook"]
    assert {m.priority for m in sent} == {0}
    contact = next(m for m in sent if m.person == "contact:0")  # in the defender's Spanish
    assert contact.text == notices.contact_notice("es", "quiet-heron-41", duress=False).text
    assert contact.text.startswith("Tu contacto quiet-heron-41")
    hook = next(m for m in sent if m.body)
    assert hook.body is not None and hook.body["dedup_key"] == alert.dedup_key
    assert hook.body["alert"]["priority"] == "P0"


async def test_it_keeps_one_open_alert_per_kind(world: World) -> None:
    first = await raise_(world, AlertKind.panic)
    again = await raise_(world, AlertKind.panic, T0 + MIN)
    other = await raise_(world, AlertKind.duress, T0 + MIN)
    assert again.id == first.id and other.id != first.id
    assert len([m for m in await outbox(world) if m.priority == 0]) == 8  # not 12


async def test_a_panic_pressed_again_after_the_ack_reaches_the_desk_at_once(
    world: World,
) -> None:
    """Acknowledged at T0+2 min; at T0+10 min the defender, being detained, presses panic
    again: the desk hears now (not at the ack timeout) and the alert waits for a responder."""
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:
        await alert_handling.acknowledge(
            s,
            world.vault,
            alert=alert,
            responder_id=world.responder_ids[0],
            now=T0 + 2 * MIN,
            via="desk",
        )
    before = len(await outbox(world))
    again = await raise_(world, AlertKind.panic, T0 + 10 * MIN)
    assert again.id == alert.id
    fresh = await alert_of(world)
    assert fresh is not None and fresh.state is AlertState.triggered
    queued = (await outbox(world))[before:]
    assert "responder:0" in {m.person for m in queued}
    assert [m.body["type"] for m in queued if m.body] == ["alert.escalated"]
    kinds = [(e.kind, e.detail.get("reason")) for e in await timeline(world, alert.id)]
    assert kinds[-2:] == [("raised_again", None), ("step", "raised_again")]
    await raise_(world, AlertKind.panic, T0 + 11 * MIN)  # not yet acknowledged again:
    assert len(await outbox(world)) == before + len(queued)  # the ladder repeats as it was
    assert [e.kind for e in await timeline(world, alert.id)][-1] == "raised_again"


async def test_it_never_contacts_the_device_under_duress(world: World, sweep: Sweep) -> None:
    alert = await raise_(world, AlertKind.duress)
    assert alert.do_not_contact
    for minutes in range(0, 120, 15):
        await sweep.run(T0 + minutes * MIN)
    async with transaction(world.sessions) as s:  # the cancel PIN afterwards changes nothing
        await alert_handling.cancel_alert(s, world.vault, alert=alert, now=T0 + 121 * MIN)
    sent = await outbox(world)
    assert "defender" not in {m.person for m in sent}
    assert {m.person for m in sent} == {"contact:0", "contact:1", "responder:0", "webhook"}
    contact = next(m for m in sent if m.person == "contact:1")  # this one reads French
    assert contact.text == notices.contact_notice("fr", "quiet-heron-41", duress=True).text
    assert "n'appelez pas" in contact.text
    fresh = await alert_of(world)
    assert fresh is not None and fresh.state is AlertState.triggered
    assert "cancel_ignored" in [e.kind for e in await timeline(world, alert.id)]


async def test_it_sends_an_all_clear_to_everyone_alerted_on_a_false_alarm(world: World) -> None:
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:
        await alert_handling.cancel_alert(s, world.vault, alert=alert, now=T0 + 2 * MIN)
    after = (await outbox(world))[4:]
    assert sorted(m.person for m in after) == ["contact:0", "contact:1", "responder:0", "webhook"]
    hook = next(m for m in after if m.body)
    assert hook.body is not None and hook.body["type"] == "alert.resolved"
    assert hook.body["alert"]["outcome"] == "false_alarm"
    fresh = await alert_of(world)
    assert fresh is not None and fresh.open_key is None
    assert (await raise_(world, AlertKind.panic, T0 + 3 * MIN)).id != alert.id  # a new one


async def test_it_freezes_the_policy_when_the_alert_opens(world: World, sweep: Sweep) -> None:
    async with transaction(world.sessions) as s:
        policy = EscalationPolicy(
            org_id=world.org_id, name="fast", steps={"repeat_s": 300}, is_default=True
        )
        s.add(policy)
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:  # editing it now changes nothing in flight
        await s.execute(update(EscalationPolicy).values(steps={"repeat_s": 3600}))
    await sweep.run(T0 + 5 * MIN)
    assert Policy.from_json(alert.policy_snapshot).repeat_s == 300
    repeats = [e for e in await timeline(world, alert.id) if e.kind == "step"]
    assert [e.detail["step"] for e in repeats] == [1, 2]


async def test_it_keeps_an_alert_open_for_proof_of_life(world: World, sweep: Sweep) -> None:
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * MIN)
    await sweep.run(T0 + 15 * MIN)
    await sweep.run(T0 + 30 * MIN)
    alert = await alert_of(world)
    assert alert is not None
    async with transaction(world.sessions) as s:
        actor = f"responder:{world.responder_ids[0]}"
        await alert_handling.keep_open(s, alert=alert, actor=actor, now=T0 + 31 * MIN)
    async with transaction(world.sessions) as s:
        assert await checkins.check_in(
            s, world.vault, defender=await world.defender(s), now=T0 + 32 * MIN
        )
    fresh = await alert_of(world)
    assert fresh is not None and fresh.state is AlertState.triggered
    told = [m for m in await outbox(world) if "v" in m.key.split("|")[0].split(":")[2]]
    assert [m.person for m in told] == ["responder:0"]


async def test_it_lets_the_external_desk_acknowledge_by_dedup_key(
    world: World, sweep: Sweep
) -> None:
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:
        assert await alerts.by_dedup_key(s, org_id=uuid.uuid4(), key=alert.dedup_key) is None
        found = await alerts.by_dedup_key(s, org_id=world.org_id, key=alert.dedup_key)
        assert found is not None
        await alert_handling.acknowledge(
            s, world.vault, alert=found, responder_id=None, now=T0 + MIN, via="webhook"
        )
    await sweep.run(T0 + 30 * MIN)  # no repeat while acknowledged
    types = [m.body["type"] for m in await outbox(world) if m.body]
    assert types == ["alert.triggered", "alert.acknowledged"]
    events = await timeline(world, alert.id)
    assert ("acknowledged", "webhook") == (events[-1].kind, events[-1].actor)


async def test_it_seals_a_location_to_the_organisation(world: World) -> None:
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:
        await alert_updates.add_location(
            s, world.vault, alert=alert, latitude=14.6349, longitude=-90.5069, now=T0
        )
    fresh = await alert_of(world)
    assert fresh is not None and fresh.location_sealed is not None
    assert b"14.6349" not in fresh.location_sealed
    body = open_sealed(
        world.private_key,
        fresh.location_sealed,
        org_id=world.org_id,
        record_id=alert.id,
        kind="alert_location",
    )
    assert body["latitude"] == 14.6349
    assert [m.person for m in await outbox(world)][-1] == "responder:0"


async def test_it_tells_every_responder_when_nobody_is_on_duty(world: World) -> None:
    async with transaction(world.sessions) as s:
        await s.execute(update(Responder).values(on_duty=False))
    await raise_(world, AlertKind.panic)
    people = sorted(m.person for m in await outbox(world))
    assert people == ["contact:0", "contact:1", "responder:0", "responder:1", "webhook"]


async def test_it_lists_and_replays_dead_webhook_events(world: World) -> None:
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.channel == "webhook")
            .values(state=OutboxState.dead)
        )
    async with transaction(world.sessions) as s:
        dead = await webhooks.dead_letters(s, org_id=world.org_id)
        assert len(dead) == 1 and dead[0].alert_id == alert.id
        assert await webhooks.replay(s, org_id=uuid.uuid4(), ids=[dead[0].id], now=T0) == 0
        assert await webhooks.replay(s, org_id=world.org_id, ids=[dead[0].id], now=T0) == 1
        assert await webhooks.dead_letters(s, org_id=world.org_id) == []


async def test_it_forgets_the_location_when_the_alert_ends(world: World) -> None:
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:
        await alert_updates.add_location(
            s, world.vault, alert=alert, latitude=14.6349, longitude=-90.5069, now=T0
        )
    async with transaction(world.sessions) as s:
        found = await alerts.by_dedup_key(s, org_id=world.org_id, key=alert.dedup_key)
        assert found is not None and found.location_sealed is not None
        await alert_handling.resolve(
            s, world.vault, alert=found, outcome="safe", actor="t", now=T0 + MIN
        )
    fresh = await alert_of(world)
    assert fresh is not None and fresh.state.value == "resolved"
    assert fresh.location_sealed is None


async def webhook_events(world: World) -> dict[str, tuple[str, object]]:
    """Each webhook row's state and its payload's alert.location_sealed, by event id."""
    async with world.sessions() as s:
        stmt = select(OutboxMessage).where(OutboxMessage.channel == "webhook")
        rows = (await s.execute(stmt)).scalars().all()
    found = {}
    for row in rows:
        raw = row.get(world.vault, "payload_enc")
        assert raw is not None
        data = json.loads(raw)
        found[data["event_id"]] = (str(row.state), data["alert"]["location_sealed"])
    return found


async def test_its_held_webhook_events_forget_the_location_with_it(world: World) -> None:
    """An event given up (dead: replayable for 30 days) or still waiting for the desk's
    endpoint carried the sealed location: when the alert ends, they lose it as the alert does
    (R25): a replay sends the event without it."""
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:
        await alert_updates.add_location(
            s, world.vault, alert=alert, latitude=14.6349, longitude=-90.5069, now=T0
        )
    async with transaction(world.sessions) as s:
        found = await alerts.by_dedup_key(s, org_id=world.org_id, key=alert.dedup_key)
        assert found is not None and found.location_sealed is not None
        defender = await world.defender(s)
        for kind in ("alert.escalated", "alert.acknowledged"):
            await follow_ups.webhook_event(s, world.vault, found, defender, kind, T0 + MIN)
        await s.execute(  # the escalation given up: a dead letter; the acknowledgement waits
            update(OutboxMessage)
            .where(OutboxMessage.idempotency_key.like("%:alert.escalated|webhook:%"))
            .values(state=OutboxState.dead)
        )
    before = await webhook_events(world)
    located = {state: e for e, (state, location) in before.items() if location is not None}
    assert set(located) == {"dead", "pending"}
    async with transaction(world.sessions) as s:
        found = await alerts.by_dedup_key(s, org_id=world.org_id, key=alert.dedup_key)
        assert found is not None
        await alert_handling.resolve(
            s, world.vault, alert=found, outcome="safe", actor="t", now=T0 + MIN
        )
    after = await webhook_events(world)
    assert {after[e][0] for e in located.values()} == {"dead", "pending"}  # the same events
    assert {e: location for e, (_state, location) in after.items()} == dict.fromkeys(after)


async def _missed(world: World, sweep: Sweep, due: timedelta) -> None:
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0 + due, now=T0)
    await sweep.run(T0 + due + 15 * MIN)  # T + grace: the alert opens (or is open already)


async def test_a_missed_check_in_acknowledged_before_its_desk_step_reaches_the_desk_triggered(
    world: World, sweep: Sweep
) -> None:
    """Found in review: a responder acknowledged a missed check-in before its desk step; at
    the ack timeout the external desk's first event was "alert.escalated", for a dedup key it
    had never seen. It learns of the alert with "alert.triggered", then all the rest."""
    await _missed(world, sweep, 0 * MIN)
    alert = await alert_of(world)
    assert alert is not None and alert.step == 1
    async with transaction(world.sessions) as s:
        await alert_handling.acknowledge(
            s,
            world.vault,
            alert=alert,
            responder_id=world.responder_ids[0],
            now=T0 + 20 * MIN,
            via="desk",
        )
    await sweep.run(T0 + 80 * MIN)  # ack + 60 min: re-triggered, now at the desk
    async with transaction(world.sessions) as s:
        await alert_handling.acknowledge(
            s, world.vault, alert=alert, responder_id=None, now=T0 + 81 * MIN, via="api"
        )
    async with transaction(world.sessions) as s:
        await alert_handling.resolve(
            s, world.vault, alert=alert, outcome="safe", actor="api", now=T0 + 82 * MIN
        )
    hooked = [m.body for m in await outbox(world) if m.body]
    assert [b["type"] for b in hooked] == [
        "alert.triggered",
        "alert.acknowledged",
        "alert.resolved",
    ]
    assert {b["dedup_key"] for b in hooked} == {alert.dedup_key}


async def test_a_further_missed_check_in_is_on_the_open_alerts_timeline(
    world: World, sweep: Sweep
) -> None:
    """Found in review: a second deadline missed while the missed check-in alert was open
    was folded into it silently; the desk sees the defender missed again."""
    await _missed(world, sweep, 0 * MIN)
    alert = await alert_of(world)
    assert alert is not None
    await _missed(world, sweep, 60 * MIN)
    await _missed(world, sweep, 120 * MIN)
    fresh = await alert_of(world)
    assert fresh is not None and fresh.id == alert.id and fresh.state is AlertState.triggered
    kinds = [e.kind for e in await timeline(world, alert.id)]
    assert kinds.count("triggered") == 1 and kinds.count("missed_again") == 2


async def test_an_endpoint_added_while_an_alert_is_open_hears_of_it_triggered_first(
    world: World, sweep: Sweep
) -> None:
    """Found in review: an endpoint added after an alert reached the desk got that alert's
    "alert.escalated" (then its acknowledgement and end) for a dedup key it had never seen.
    It hears of the alert with "alert.triggered" first; one added later still, of nothing
    but events about alerts it knows."""
    alert = await raise_(world, AlertKind.panic)
    (first,) = [m.key.split("|webhook:")[1] for m in await outbox(world) if m.body]

    async def endpoint() -> str:
        async with transaction(world.sessions) as s:
            hook, _secret = await webhooks.add(
                s, world.vault, org_id=world.org_id, url="http://desk.invalid/other"
            )
        return hook.id.hex

    second = await endpoint()
    await sweep.run(T0 + 15 * MIN)  # the repeat
    async with transaction(world.sessions) as s:
        await alert_handling.acknowledge(
            s, world.vault, alert=alert, responder_id=None, now=T0 + 16 * MIN, via="api"
        )
    third = await endpoint()
    async with transaction(world.sessions) as s:
        await alert_handling.resolve(
            s, world.vault, alert=alert, outcome="safe", actor="api", now=T0 + 17 * MIN
        )
    heard: dict[str, list[str]] = {}
    for m in await outbox(world):
        if m.body is not None:
            assert m.body["dedup_key"] == alert.dedup_key
            heard.setdefault(m.key.split("|webhook:")[1], []).append(m.body["type"])
    assert heard[first] == [
        "alert.triggered",
        "alert.escalated",
        "alert.acknowledged",
        "alert.resolved",
    ]
    assert heard[second] == ["alert.triggered", "alert.acknowledged", "alert.resolved"]
    assert third not in heard


async def test_an_endpoint_whose_triggered_was_given_up_hears_of_the_alert_triggered_again(
    world: World, sweep: Sweep
) -> None:
    """Found walking the API as an integrator: the receiver was down long enough for the
    alert's "alert.triggered" to be given up (dead), and once back it got "alert.escalated"
    for a dedup key it had never seen; a case system that opens cases on "alert.triggered",
    as the documentation says an endpoint learns of an alert, never opened one. The next event
    goes as "alert.triggered" instead (the body says where the alert stands); the end of the
    alert still reaches it, so that replaying the dead event leaves no case open."""
    alert = await raise_(world, AlertKind.panic)
    async with transaction(world.sessions) as s:  # the receiver was down: given up
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.channel == "webhook")
            .values(state=OutboxState.dead)
        )
    await sweep.run(T0 + 15 * MIN)  # the repeat
    async with transaction(world.sessions) as s:
        await alert_handling.acknowledge(
            s, world.vault, alert=alert, responder_id=None, now=T0 + 16 * MIN, via="api"
        )
    async with transaction(world.sessions) as s:  # the re-announcement was given up too
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.channel == "webhook")
            .values(state=OutboxState.dead)
        )
    async with transaction(world.sessions) as s:
        await alert_handling.resolve(
            s, world.vault, alert=alert, outcome="safe", actor="api", now=T0 + 17 * MIN
        )
    sent = [m.body for m in await outbox(world) if m.body is not None]
    assert [b["type"] for b in sent] == [
        "alert.triggered",  # given up
        "alert.triggered",  # the repeat, announcing it again
        "alert.acknowledged",
        "alert.resolved",  # its triggered given up, but it heard of the alert
    ]
    assert sent[1]["alert"]["step"] == 2 and sent[2]["alert"]["state"] == "acknowledged"
    assert {b["dedup_key"] for b in sent} == {alert.dedup_key}
