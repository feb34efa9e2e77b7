"""A missed check-in alert's page says which deadline was missed (both backends). It said
only when the alert was raised (the end of the grace period, or later when the sweep was
late): a responder calling the defender's contacts could not say "they were due to check in
at 18:00". A routine's row moves on to its next deadline as the alert opens, so the missed
one is now kept on the alert's opening event (core.alerts.raise_many's ``due``) and the page
shows it, as the page's other times are shown."""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from api.pages import when
from core import timers
from core.db import transaction
from core.i18n import SUPPORTED, gettext
from core.models import Alert, AlertKind, CheckIn, CheckInKind, CheckInState
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser


async def test_a_missed_checkin_alert_page_says_when_the_checkin_was_due(desk: Desk) -> None:
    a = desk.a
    assert a.defender is not None and a.alert is not None
    now = datetime.now(UTC).replace(microsecond=0)
    due = now - timedelta(hours=1)
    checkin = CheckIn(
        id=uuid.uuid4(),
        defender_id=a.defender.id,
        kind=CheckInKind.routine,
        due_at=due,
        grace_s=900,
        state=CheckInState.reminded,
        next_action_at=due + timedelta(seconds=900),
        routine_time=due.strftime("%H:%M"),
        routine_days="0123456",
    )
    async with transaction(desk.sessions) as s:
        s.add(checkin)
    async with transaction(desk.sessions) as s:
        assert await timers.take(s, desk.vault, state=CheckInState.reminded, now=now, limit=10)
    async with desk.sessions() as s:
        alert = (
            await s.execute(
                select(Alert).where(
                    Alert.defender_id == a.defender.id, Alert.kind == AlertKind.missed_checkin
                )
            )
        ).scalar_one()
        row = await s.get(CheckIn, checkin.id)
        assert row is not None and row.state is CheckInState.armed
        assert row.due_at.replace(tzinfo=UTC) > now  # the routine moved on: not the row's
    async with browser(desk, a, "admin") as (c, _csrf):
        for lang in SUPPORTED:
            page = (await c.get(f"/alerts/{alert.id}", headers={"accept-language": lang})).text
            label = html.escape(gettext(lang)("Check-in was due"))
            shown = f'<dt>{label}</dt><dd class="missed-deadline">{html.escape(when(due, lang))}'
            assert shown in page, lang
            if lang != "en":
                assert gettext(lang)("Check-in was due") != "Check-in was due", lang
        panic = (await c.get(f"/alerts/{a.alert.id}")).text
        assert 'class="missed-deadline"' not in panic  # only a missed check-in's
