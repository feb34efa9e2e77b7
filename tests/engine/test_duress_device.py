"""Nothing of a do-not-contact alert reaches the defender's own chat, even when that chat is a
responder's too: not its ladder, and not what is sent when it closes or is kept open."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from core import alert_handling, alerts, checkins, defenders, notices
from core.db import transaction
from core.messages import DeliveryError
from core.models import AlertKind, Defender, DefenderStatus
from core.sweep import Sweep
from tests.engine.conftest import T0, World, address, alert_of, build_world, outbox
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import dispatcher

MIN = timedelta(minutes=1)


async def share_phone(world: World) -> None:
    """r0's preferred chat is the defender's own phone (a responder who is a defender too)."""
    async with transaction(world.sessions) as s:
        shared = address(world.vault, "standin", "phone", responder_id=world.responder_ids[0])
        shared.defender_id, shared.preference = world.defender_id, -1
        s.add(shared)


async def test_the_all_clear_of_a_duress_alert_never_reaches_the_defenders_own_chat(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    await share_phone(world)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    async with transaction(sessions) as s:
        defender = await world.defender(s)
        await alerts.raise_alert(s, vault, defender=defender, kind=AlertKind.duress, now=T0)
    await d.drain(T0)
    assert len(channel.to("r0-quiet-heron-41")) == 1  # r0 paged, not on the phone
    alert = await alert_of(world)
    assert alert is not None
    async with transaction(sessions) as s:
        await alert_handling.resolve(
            s, vault, alert=alert, outcome="safe", actor="desk", now=T0 + MIN
        )
    await d.drain(T0 + MIN)
    assert len(channel.to("r0-quiet-heron-41")) == 2  # r0 hears it is over, where paged
    assert [t for a, t in channel.calls if a == "phone"] == []


async def test_a_check_in_kept_open_for_a_hidden_defender_never_reaches_their_chat(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """A defender 'deleted' under duress (hidden): their missed check-in alert is flagged do
    not contact; a check-in on an alert the desk keeps open tells the desk, never the phone."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    await share_phone(world)
    async with transaction(sessions) as s:
        await s.execute(update(Defender).values(status=DefenderStatus.hidden))
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    async with transaction(sessions) as s:
        defender = await world.defender(s)
        alert = await alerts.raise_alert(
            s, vault, defender=defender, kind=AlertKind.missed_checkin, now=T0
        )
        assert alert.do_not_contact
    await Sweep(sessions, vault, owner="s").run(T0 + 15 * MIN)  # the desk step
    await d.drain(T0 + 15 * MIN)
    assert len(channel.to("r0-quiet-heron-41")) == 1
    alert = await alert_of(world)
    assert alert is not None
    async with transaction(sessions) as s:
        await alert_handling.keep_open(s, alert=alert, actor="desk", now=T0 + 16 * MIN)
    async with transaction(sessions) as s:
        defender = await world.defender(s)
        await checkins.check_in(s, vault, defender=defender, now=T0 + 17 * MIN)
    await d.drain(T0 + 17 * MIN)
    assert len(channel.to("r0-quiet-heron-41")) == 2  # "checked in, kept open"
    assert [t for a, t in channel.calls if a == "phone"] == []


async def test_a_check_in_missed_under_duress_never_asks_the_contacts_to_call(
    world: World, sweep: Sweep
) -> None:
    """A duress alert is open (contacts told: do not call their phone) when the defender, held,
    misses a check-in: the missed check-in's alert is as careful. Its contacts are told not to
    call either, and its ladder sends nothing to the defender's device."""
    async with transaction(world.sessions) as s:
        defender = await world.defender(s)
        await alerts.raise_alert(s, world.vault, defender=defender, kind=AlertKind.duress, now=T0)
        await checkins.arm_timer(s, defender=defender, due_at=T0 + 60 * MIN, now=T0)
    for minutes in (60, 75, 90, 120):
        await sweep.run(T0 + minutes * MIN)
    async with world.sessions() as s:
        missed = await alerts.open_alert(
            s, alerts.dedup_key(world.defender_id, AlertKind.missed_checkin)
        )
    assert missed is not None and missed.do_not_contact
    sent = await outbox(world)
    to_contacts = [m.text for m in sent if m.person.startswith("contact")]
    careful = {
        notices.contact_notice(lang, "quiet-heron-41", duress=True).text
        for lang in ("en", "es", "fr", "pt", "ar")
    }
    assert len(to_contacts) >= 4 and set(to_contacts) <= careful, to_contacts  # two each
    second = [m for m in sent if m.person == "defender" and m.key.startswith("a:")]
    assert second == []  # the first reminder went, as it does for anyone; nothing of the alert


async def test_an_alert_open_when_the_defender_is_hidden_becomes_do_not_contact(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """The missed check-in alert opened first; then a "delete my data" forced with the duress
    PIN hid the defender. The alert's desk step warns the desk not to contact the device and
    skips the defender's own chat (a responder's too), as for an alert opened after."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    await share_phone(world)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    async with transaction(sessions) as s:
        defender = await world.defender(s)
        alert = await alerts.raise_alert(
            s, vault, defender=defender, kind=AlertKind.missed_checkin, now=T0
        )
        assert not alert.do_not_contact
    async with transaction(sessions) as s:
        await defenders.hide(s, defender=await world.defender(s))
    await Sweep(sessions, vault, owner="s").run(T0 + 15 * MIN)  # the desk step
    await d.drain(T0 + 15 * MIN)
    alert = await alert_of(world)
    assert alert is not None and alert.do_not_contact
    (paged,) = channel.to("r0-quiet-heron-41")
    assert "Do NOT contact their device" in paged
    assert [t for a, t in channel.calls if a == "phone"] == []


@pytest.mark.parametrize("deletion", ["real", "forced"])
async def test_nothing_waiting_reaches_the_phone_after_a_deletion(
    sessions, vault, deletion: str
) -> None:  # type: ignore[no-untyped-def]
    """A reminder was queued and had not gone yet when the defender deleted their data (or
    was forced to, with the duress PIN): it never arrives. After a real deletion it speaks of
    a check-in that no longer exists; after a forced one it would tell whoever holds the phone
    that nothing was deleted. Both deletions look the same from the phone (R8)."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    async with transaction(sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - MIN)
    await Sweep(sessions, vault, owner="s").run(T0)  # the reminder, queued
    assert [m.person for m in await outbox(world)] == ["defender"]
    async with transaction(sessions) as s:
        defender = await world.defender(s)
        if deletion == "real":
            await defenders.delete_data(s, defender=defender)
        else:
            await defenders.hide(s, defender=defender)
    await d.drain(T0 + MIN)
    assert channel.calls == []
    (row,) = await outbox(world)
    assert (row.state, row.text) == ("failed", "")  # withdrawn, its text shredded


class DeletedWhileSending(StandIn):
    """The defender deletes their data (or is forced to) while the reminder is on its way;
    then the send times out."""

    def __init__(self, world: World, deletion: str) -> None:
        super().__init__("standin")
        self.world, self.deletion = world, deletion

    async def send(self, to, message):  # type: ignore[no-untyped-def]
        if not self.calls:
            async with transaction(self.world.sessions) as s:
                defender = await self.world.defender(s)
                if self.deletion == "real":
                    await defenders.delete_data(s, defender=defender)
                else:
                    await defenders.hide(s, defender=defender)
            self.calls.append((to.value, message.text))
            raise DeliveryError("Timed out", permanent=False)
        return await super().send(to, message)


@pytest.mark.parametrize("deletion", ["real", "forced"])
async def test_a_message_being_sent_at_a_deletion_is_not_tried_again(
    sessions, vault, deletion: str
) -> None:  # type: ignore[no-untyped-def]
    """The reminder was being sent when the deletion withdrew what was waiting; its send
    failed. Before, it went back in the queue and reached the phone on the retry."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = DeletedWhileSending(world, deletion)
    d = dispatcher(world, {"standin": channel})
    async with transaction(sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - MIN)
    await Sweep(sessions, vault, owner="s").run(T0)  # the reminder, queued
    for minutes in (0, 1, 5, 30, 120):
        await d.drain(T0 + minutes * MIN)
    assert len(channel.calls) == 1 and channel.sent == []
    (row,) = [m for m in await outbox(world) if m.person == "defender"]
    assert (row.state, row.text) == ("failed", "")  # withdrawn, its text shredded
