"""Found in a fresh-eyes review of the defenders' conversations (both backends)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.models import Report
from tests.flows.conftest import CANCEL_PIN, Desk, Pick, onboard
from tests.flows.test_report import CANARY, sealed_parts


@pytest.mark.parametrize("typed", ["/safe", "/SAFE"])
async def test_safe_typed_in_the_middle_of_a_report_keeps_the_report(
    desk: Desk, typed: str
) -> None:
    """The timer's own words say "When you are safe, send /safe": typed while a report is
    being written, it is the "I'm safe" button, and the report is set aside, not dropped."""
    alice = await onboard(desk)
    for said in ("/report", Pick("raid"), Pick("yesterday"), "Barrio Santa Fe", Pick("police")):
        await alice.say(said)
    for said in (Pick("me_and_others"), "4", CANARY):
        await alice.say(said)
    assert "Send your PIN" in await alice.text(typed)
    back = await alice.say(CANCEL_PIN)
    assert "noted that you are safe" in " ".join(r.text for r in back)
    assert [c.key for c in back[-1].choices] == ["done"]  # the account's question again
    for more in (Pick("done"), Pick("done"), Pick("anonymous"), Pick("urgent"), Pick("send")):
        await alice.say(more)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    assert sealed_parts(desk, filed) == [{"place": "Barrio Santa Fe"}, {"text": CANARY}]
