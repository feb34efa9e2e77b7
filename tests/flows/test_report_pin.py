"""A PIN typed alone as the answer to a report's question is never sealed into the report,
where the desk would read it. On the phone it goes as any other number there (R8): the
cancel PIN, the duress PIN (which raises its silent alert) and a number that is neither get
the same reply and deletion, so trying numbers there tells nobody which one is a PIN."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from core.crypto import open_sealed
from core.messages import Outbound
from core.models import Alert, AlertKind, Defender, Report
from flows.report import WITHHELD
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Event, Pick, onboard
from tests.flows.test_report import sealed_parts

NOT_A_PIN = "5555"
ACCOUNT = "they came at night"
START = ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown"))
FINISH = (Pick("no"), Pick("record"), Pick("send"))  # consent, urgency, confirm


async def filed_by(desk: Desk, chat: Chat) -> dict[str, Any]:
    """The chat's filed report: its sealed body and parts, opened as the desk does."""
    defender = await chat.defender()
    assert defender is not None
    async with desk.sessions() as s:
        filed = await s.scalar(select(Report).where(Report.defender_id == defender.id))
    assert filed is not None
    body = open_sealed(
        desk.private_key, filed.sealed_body, org_id=desk.org.id, record_id=filed.id, kind="report"
    )
    return {
        "count": body["count"],
        "count_withheld": body.get("count_withheld"),
        "parts": sealed_parts(desk, filed),
    }


async def duress_alerts(desk: Desk) -> list[str]:
    async with desk.sessions() as s:
        rows = await s.execute(
            select(Defender.handle)
            .join(Alert, Alert.defender_id == Defender.id)
            .where(Alert.kind == AlertKind.duress)
        )
        return [str(h) for h in rows.scalars()]


async def three(desk: Desk) -> list[tuple[Chat, str]]:
    """Three defenders, each about to type a number: their PIN, their duress PIN, neither."""
    return [
        (await onboard(desk, "calm"), CANCEL_PIN),
        (await onboard(desk, "forced"), DURESS_PIN),
        (await onboard(desk, "other"), NOT_A_PIN),
    ]


async def test_a_pin_at_the_evidence_question_is_not_in_the_report(desk: Desk) -> None:
    people = await three(desk)
    shown: list[list[Outbound]] = []
    for chat, number in people:
        for said in (*START, Pick("me"), ACCOUNT, Pick("done")):
            await chat.say(said)
        shown.append(await chat.say(number))
        for said in (Pick("done"), *FINISH):
            await chat.say(said)
    assert shown[0] == shown[1] == shown[2]  # same words, buttons and deletion
    assert "Received" in shown[0][0].text and shown[0][0].delete_message_ids
    calm, forced, other = [await filed_by(desk, chat) for chat, _n in people]
    assert calm["parts"] == forced["parts"] == [{"text": ACCOUNT}, WITHHELD]
    assert other["parts"] == [{"text": ACCOUNT}, {"text": NOT_A_PIN}]
    forced_defender = await people[1][0].defender()
    assert forced_defender is not None
    assert await duress_alerts(desk) == [forced_defender.handle]  # at once, silently


async def test_a_pin_as_the_account_or_the_place_is_not_in_the_report(desk: Desk) -> None:
    people = await three(desk)
    shown: list[list[Outbound]] = []
    for chat, number in people:
        for said in START[:-2]:
            await chat.say(said)
        replies = await chat.say(number)  # "Where did it happen?"
        for said in (Pick("unknown"), Pick("me")):
            await chat.say(said)
        replies += await chat.say(number)  # "Tell us what happened"
        shown.append(replies)
        for said in (Pick("done"), Pick("none"), *FINISH):
            await chat.say(said)
    assert shown[0] == shown[1] == shown[2]
    calm, forced, other = [await filed_by(desk, chat) for chat, _n in people]
    assert calm["parts"] == forced["parts"] == [WITHHELD, WITHHELD]
    assert other["parts"] == [{"place": NOT_A_PIN}, {"text": NOT_A_PIN}]


@pytest.mark.parametrize("number", [CANCEL_PIN, DURESS_PIN])
async def test_a_pin_as_how_many_people_is_not_in_the_report(desk: Desk, number: str) -> None:
    alice = await onboard(desk)
    for said in (*START, Pick("others")):
        await alice.say(said)
    assert "Tell us what happened" in await alice.text(number)
    for said in (ACCOUNT, Pick("done"), Pick("none"), *FINISH):
        await alice.say(said)
    assert (await filed_by(desk, alice))["count"] is None


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_a_count_that_is_a_pin_is_withheld_and_the_desk_is_told(
    desk: Desk, channel: str
) -> None:
    """Review: a defender whose real answer to "How many people, roughly?" equalled their PIN
    had the count dropped silently: the desk read "no count", as for "Not sure". Written
    "1,234" (PIN 1234), the PIN went into the report as the count 1234. Now the number is not
    kept, the report says a number was withheld there, and the phone shows exactly what any number
    gets (R8: telling the defender would tell whoever holds the phone which number is the
    PIN)."""
    people = [
        (await onboard(desk, "calm", channel=channel), "4,826"),  # the PIN, as a count
        (await onboard(desk, "plain", channel=channel), CANCEL_PIN),
        (await onboard(desk, "other", channel=channel), "5,555"),  # neither PIN
    ]
    shown = []
    for chat, number in people:
        for said in (*START, Pick("others")):
            await chat.say(said)
        shown.append([m.to_json() for m in await chat.say(number)])
        for said in (ACCOUNT, Pick("done"), Pick("none"), *FINISH):
            await chat.say(said)
    calm, plain, other = [await filed_by(desk, chat) for chat, _n in people]
    assert shown[0] == shown[2]  # the phone cannot tell them apart
    for filed in (calm, plain):
        assert filed["count"] is None and filed["count_withheld"] == "pin"
        assert filed["parts"] == [{"text": ACCOUNT}]  # no part more: MAX_PARTS counts alike
    assert other["count"] == 5555 and other["count_withheld"] is None
    assert "4826" not in str(calm) and "4,826" not in str(calm)


async def test_an_account_edited_into_the_pin_is_not_in_the_report(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in (*START, Pick("me"), ACCOUNT):
        await alice.say(said)
    shown = await alice.text(Event(text=CANCEL_PIN, edited=True, chat_message_id=str(alice.sent)))
    assert "Received your correction" in shown
    for said in (Pick("done"), Pick("none"), *FINISH):
        await alice.say(said)
    parts = (await filed_by(desk, alice))["parts"]
    assert parts == [{"text": ACCOUNT}, {**WITHHELD, "correction": True}]


async def test_a_pin_at_the_date_question_is_kept_nowhere(desk: Desk) -> None:
    """A guard (checked in review, nothing leaked): a PIN is no date ("couldn't read that
    date", as any other number gets, and deleted from the chat); nothing of it is stored."""
    people = await three(desk)
    shown = []
    for chat, number in people:
        for said in START[:2]:
            await chat.say(said)
        shown.append([m.to_json() for m in await chat.say(number)])
        for said in (Pick("unknown"), *START[3:], Pick("me"), ACCOUNT, Pick("done")):
            await chat.say(said)
        await chat.say(Pick("none"))
        for said in FINISH:
            await chat.say(said)
    assert shown[0] == shown[1] == shown[2]
    assert "couldn't read that date" in shown[0][0]["text"]
    for chat, number in people[:2]:
        defender = await chat.defender()
        assert defender is not None
        async with desk.sessions() as s:
            filed = await s.scalar(select(Report).where(Report.defender_id == defender.id))
        assert filed is not None
        triage = filed.get_text(desk.vault, "triage_enc") or ""
        assert number not in triage and number not in str(await filed_by(desk, chat))
