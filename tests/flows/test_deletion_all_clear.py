"""A contact told "may need help" hears the all-clear even when the defender deleted their
data (the contact's record with it) before the desk closed the alert (found in review; both
backends)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from core import alert_handling
from core.db import transaction
from core.models import Alert, AlertState
from tests.flows.conftest import CANCEL_PIN, Desk, Pick, onboard
from tests.flows.test_desk_review_fixes import _contact_of


async def test_contacts_alerted_before_a_deletion_still_hear_the_all_clear(desk: Desk) -> None:
    alice = await onboard(desk)
    sister = desk.chat("sister")
    await _contact_of(desk, alice, sister)
    await sister.received()
    await alice.say("/alert")
    assert any("may need help" in m.text for m in await sister.received())
    await alice.say("/settings")
    await alice.say(Pick("delete"))
    assert "deleted" in await alice.text(CANCEL_PIN)
    async with transaction(desk.sessions) as s:
        alert = (await s.execute(select(Alert))).scalar_one()
        assert alert.state is AlertState.triggered  # deleting the data closes nothing
        await alert_handling.resolve(
            s, desk.vault, alert=alert, outcome="safe", actor=f"responder:{uuid.uuid4()}",
            now=desk.clock.now,
        )  # fmt: skip
    told = [m.text for m in await sister.received()]
    assert any("is all right" in t for t in told), told
