"""The location request's "Skip" typed as its label: on Telegram the request is a reply
keyboard (bot.telegram_render), whose "Skip" button sends its label as text."""

from __future__ import annotations

import pytest

from tests.flows.conftest import Desk, Pick, onboard


@pytest.mark.parametrize("language", ["en", "es", "fr", "pt", "ar"])
async def test_skip_typed_as_its_label_answers_the_location_request(
    desk: Desk, language: str
) -> None:
    """Telegram's location request is a reply keyboard: its "Skip" button sends its label."""
    ana = await onboard(desk, f"ana-{language}", language=language)
    (asked,) = await ana.say("/sos")
    assert asked.request_location
    (skip,) = asked.choices
    (talk,) = await ana.say(skip.label)
    assert {c.key for c in talk.choices} == {"yes", "no"}, talk.text
    await ana.say("/report")
    await ana.say(Pick("threat"))
    (where,) = await ana.say(Pick("today"))
    assert where.request_location
    (skip,) = where.choices
    (who,) = await ana.say(skip.label)
    assert "police" in {c.key for c in who.choices}, who.text
