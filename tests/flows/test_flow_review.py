"""Found in a review of the defenders' conversations (both backends)."""

from __future__ import annotations

import pytest

from core.models import AlertKind
from tests.flows.conftest import CANCEL_PIN, Chat, Desk, Pick, onboard
from tests.flows.test_panic import alerts


async def _discreet(desk: Desk, name: str) -> Chat:
    chat = await onboard(desk, name)
    for said in ("/settings", Pick("discreet"), Pick("on"), Pick("10m")):
        await chat.say(said)
    return chat


@pytest.mark.parametrize("said", ["hello", "what is this?", "cancel", "/cancel"])
async def test_discreet_mode_never_says_an_alert_is_on(desk: Desk, said: str) -> None:
    """After the code phrase a discreet phone shows a plain "OK."; whatever is typed next (by
    the defender, or by whoever took the phone) is answered as with no alert on."""
    alice, calm = await _discreet(desk, "alice"), await _discreet(desk, "calm")
    assert [r.text for r in await alice.say("/sos")] == ["OK."]
    shown, usual = await alice.say(said), await calm.say(said)
    assert "alert" not in "\n".join(m.text for m in shown).lower(), shown
    assert shown == usual
    assert "Alert called off." in await alice.text(CANCEL_PIN)  # the PIN still calls it off


@pytest.mark.parametrize("typed", ["¡SOS!", "¡sos", "S.O.S.", "s.o.s", "¡¡SOS!!"])
async def test_sos_as_people_write_it_raises_the_alert(desk: Desk, typed: str) -> None:
    """Spanish opens an exclamation with "¡"; "S.O.S." is how many write it."""
    alice = await onboard(desk)
    await alice.say("/report")  # mid-dialog too
    replies = await alice.say(typed)
    assert "Alert sent." in replies[0].text, replies
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic]
