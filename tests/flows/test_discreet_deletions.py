"""What a defender's chat must not keep: in discreet mode a location, and a PIN even when it
comes as an edit (the bot deletes them, like any PIN, where the channel can)."""

from __future__ import annotations

import pytest

from core.messages import Location, Outbound
from tests.flows.conftest import CANCEL_PIN, Chat, Desk, Event, Pick, onboard


async def discreet(desk: Desk) -> Chat:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("discreet"))
    await alice.say(Pick("on"))
    await alice.say(Pick("10m"))
    defender = await alice.defender()
    assert defender is not None and defender.discreet
    return alice


def deleted(replies: list[Outbound]) -> list[str]:
    return [i for r in replies for i in r.delete_message_ids]


@pytest.mark.parametrize("live", [False, True])
async def test_a_discreet_defender_s_location_after_an_alert_is_deleted(
    desk: Desk, live: bool
) -> None:
    alice = await discreet(desk)
    assert [r.text for r in await alice.say("/sos")] == ["OK."]
    shared = Event(location=Location(4.61, -74.08, live=live), chat_message_id="location-77")
    replies = await alice.say(shared)
    assert "Location received." in replies[0].text
    # Like a PIN: at once, with the reply. A live one stays while it shares: deleting its
    # message would stop the updates the desk follows the defender by.
    assert deleted(replies) == ([] if live else ["location-77"])


async def test_a_location_stays_for_a_defender_not_in_discreet_mode(desk: Desk) -> None:
    alice = await onboard(desk)  # a live location must keep updating the alert
    await alice.say("/sos")
    shared = Event(location=Location(4.61, -74.08, live=True), chat_message_id="location-78")
    assert deleted(await alice.say(shared)) == []


@pytest.mark.parametrize("discreet_mode", [False, True])
async def test_a_pin_sent_as_an_edit_is_deleted(desk: Desk, discreet_mode: bool) -> None:
    alice = await discreet(desk) if discreet_mode else await onboard(desk)
    await alice.say("/sos")
    if not discreet_mode:
        await alice.say(Pick("skip"))
        await alice.say(Pick("no"))
    edit = Event(text=CANCEL_PIN, edited=True, chat_message_id="pin-9")
    replies = await alice.say(edit)
    assert deleted(replies) == ["pin-9"]
    assert "I don't read edited messages." in replies[0].text  # R3: not an answer
    assert "Alert called off." in await alice.text(CANCEL_PIN)  # a new message is


async def test_a_discreet_defender_s_report_location_is_deleted_and_never_asked_by_keyboard(
    desk: Desk,
) -> None:
    alice = await discreet(desk)
    await alice.say("/report")
    await alice.say(Pick("threat"))
    (where,) = await alice.say(Pick("today"))
    assert not where.request_location  # no reply keyboard left on a discreet phone
    shared = Event(location=Location(4.61, -74.08), chat_message_id="location-79")
    assert deleted(await alice.say(shared)) == ["location-79"]
