"""The queue's driver-level path (core.db.fetch_raw, api.alert_schemas.queue_page_json): the
same bytes the model would send for the same alerts, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from api.alert_schemas import ROW_FIELDS, AlertOut, AlertPage, out, queue_item
from core.db import transaction
from core.desk_alerts import QUEUE_COLUMNS, Cursor, list_alerts
from core.models import Alert, AlertKind, AlertState, Defender
from tests.api.conftest import Desk, make_alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # whole seconds: pydantic drops the fraction


async def _queue(desk: Desk) -> list[AlertOut]:
    """Organisation A's queue built the slow way: ORM objects, the model, sorted in Python."""
    async with desk.sessions() as s:
        found = (
            await s.execute(
                select(Alert, Defender.handle)
                .join(Defender, Defender.id == Alert.defender_id)
                .where(Alert.org_id == desk.a.org.id)
            )
        ).all()
    return sorted(
        (out(a, handle) for a, handle in found),
        key=lambda a: (a.triggered_at, a.id),
        reverse=True,
    )


def _page(items: list[AlertOut], cursor: str | None) -> bytes:
    return AlertPage(items=items, next_cursor=cursor).model_dump_json().encode()


async def test_the_page_is_what_the_model_sends_for_the_same_alerts(desk: Desk) -> None:
    assert [c.key for c in QUEUE_COLUMNS] == list(ROW_FIELDS)
    responder = desk.a.responders["responder"].id
    async with transaction(desk.sessions) as s:
        made = [
            await make_alert(
                s, desk.a, kind, T0 + timedelta(minutes=i, microseconds=m), resolved=r
            )
            for i, (kind, m, r) in enumerate(
                [
                    (AlertKind.duress, 0, False),
                    (AlertKind.panic, 120_000, True),
                    (AlertKind.report, 7, True),
                    (AlertKind.missed_checkin, 999_999, True),
                ]
            )
        ]
        made[0].do_not_contact, made[0].step = True, 2
        made[0].state, made[0].acknowledged_by = AlertState.acknowledged, responder
        made[0].acknowledged_at = T0 + timedelta(minutes=5, microseconds=500)
        for a in made[1:]:
            a.resolved_at, a.outcome, a.assigned_to = T0 + timedelta(hours=1), "safe", responder
    # another organisation's alert never shows
    async with transaction(desk.sessions) as s:
        await make_alert(s, desk.b, AlertKind.report, T0 + timedelta(hours=2), resolved=True)
    async with await desk.client(desk.a, "token") as c:
        first = await c.get("/api/v1/alerts", params={"limit": 3})
        cursor = first.json()["next_cursor"]
        second = await c.get("/api/v1/alerts", params={"limit": 3, "cursor": cursor})
        acked = await c.get("/api/v1/alerts", params={"state": "acknowledged"})
    queue = await _queue(desk)
    assert len(queue) == 5 and {a.id for a in made} < {a.id for a in queue}
    assert first.content == _page(queue[:3], cursor)
    assert second.content == _page(queue[3:], None)
    assert acked.content == _page([a for a in queue if a.state is AlertState.acknowledged], None)
    assert Cursor.decode(cursor) == Cursor(queue[2].triggered_at, queue[2].id)


async def test_ties_on_the_time_are_paged_by_id_without_loss(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        made = [await make_alert(s, desk.a, k, T0, resolved=True) for k in AlertKind]
    seen: list[str] = []
    async with desk.sessions() as s:
        after = None
        while True:
            rows, after = await list_alerts(s, org_id=desk.a.org.id, after=after, limit=1)
            seen += [str(queue_item(r)["id"]) for r in rows]
            if after is None:
                break
    assert seen == [str(a.id) for a in await _queue(desk)]
    assert {str(a.id) for a in made} < set(seen)


async def test_free_texts_are_escaped_as_the_model_escapes_them(desk: Desk) -> None:
    """The page is written by hand (api.alert_schemas.queue_page_json): the texts it does not
    write itself (dedup key, handle, outcome) must come out as pydantic writes them."""
    odd = 'q"uo\\te\n\t\x01\x1f\x7f é ☎ 𝄞 \u2028 </script>'
    assert desk.a.defender is not None
    async with transaction(desk.sessions) as s:
        alert = await make_alert(s, desk.a, AlertKind.report, T0, resolved=True)
        alert.dedup_key, alert.outcome = "ext-" + odd, odd[:20]  # as long as the columns allow
        alert.acknowledged_at = T0 + timedelta(seconds=1, microseconds=1)
        defender = await s.get(Defender, desk.a.defender.id)
        assert defender is not None
        defender.handle = "h-" + odd
    async with await desk.client(desk.a, "token") as c:
        page = await c.get("/api/v1/alerts")
    assert page.status_code == 200
    assert page.content == _page(await _queue(desk), None)
    (item,) = (i for i in page.json()["items"] if i["id"] == str(alert.id))
    assert (item["dedup_key"], item["defender_handle"], item["outcome"]) == (
        "ext-" + odd,
        "h-" + odd,
        odd[:20],
    )
