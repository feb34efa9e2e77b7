"""A report's date typed as "5/3": the 5th of March to some, May 3rd to others. Read one way
whatever the language, the desk's report was dated two months off: it is asked, the two
dates written out in the defender's language, never guessed (as a routine's "8" is)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from core.crypto import open_sealed
from core.models import Report
from tests.flows.conftest import Chat, Desk, Pick, onboard

WHICH = "Which date do you mean?"
AFTER = (Pick("skip"), Pick("unknown"), Pick("me"), "they came", Pick("done"), Pick("none"))
FINISH = (Pick("no"), Pick("record"), Pick("send"))


async def at_when(desk: Desk, channel: str, language: str = "en") -> Chat:
    chat = await onboard(desk, language=language, channel=channel)
    for said in ("/report", Pick("threat")):
        await chat.say(said)
    return chat


async def filed_date(desk: Desk, chat: Chat) -> str:
    """The date the desk's queue reads, once the rest of the report is answered."""
    for said in (*AFTER, *FINISH):
        await chat.say(said)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    return str(json.loads(filed.get_text(desk.vault, "triage_enc") or "")["initial_date"])


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_an_ambiguous_date_is_asked_written_out(desk: Desk, channel: str) -> None:
    alice = await at_when(desk, channel)  # the desk's clock: Monday 4 May 2026
    (asked,) = await alice.say("5/3")
    assert asked.text == WHICH
    assert [c.label for c in asked.choices] == ["March 5, 2026", "May 3, 2026"]
    picked = Pick(asked.choices[1].key) if channel == "telegram" else "2"  # Signal numbers
    assert "Where did it happen?" in await alice.text(picked)
    assert await filed_date(desk, alice) == "2026-05-03"


async def test_the_dates_are_written_in_the_defenders_language(desk: Desk) -> None:
    bruno = await at_when(desk, "signal", language="es")
    (asked,) = await bruno.say("3/5/2025")
    assert [c.label for c in asked.choices] == ["3 de mayo de 2025", "5 de marzo de 2025"]
    await bruno.say(Pick(asked.choices[1].key))
    assert await filed_date(desk, bruno) == "2025-03-05"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("13/5", "2025-05-13"), ("5/13", "2025-05-13"), ("4/4", "2026-04-04"),
     ("2026-03-05", "2026-03-05"), ("4/6/2026", "2026-04-06")],
)  # fmt: skip
async def test_a_date_with_one_meaning_is_not_asked(desk: Desk, typed: str, meant: str) -> None:
    """ "4/6/2026" is one date: April 6th; June 4th is still to come."""
    alice = await at_when(desk, "signal")
    assert "Where did it happen?" in await alice.text(typed)
    assert await filed_date(desk, alice) == meant


async def test_at_the_question_another_date_is_read_afresh(desk: Desk) -> None:
    alice = await at_when(desk, "signal")
    assert await alice.text("5/3") == WHICH
    assert await alice.text("soon") == (
        "I couldn't read that date. Send it like 2024-05-03, or choose.\n\n" + WHICH
    )
    assert await alice.text("2/1") == WHICH  # another pair: its own two dates
    assert "Where did it happen?" in await alice.text("2026-04-30")
    assert await filed_date(desk, alice) == "2026-04-30"


@pytest.mark.parametrize(
    ("language", "typed", "meant"),
    [("es", "ayer por la tarde", "2026-05-03"), ("fr", "hier soir", "2026-05-03"),
     ("pt", "anteontem à noite", "2026-05-02"), ("ar", "أمس مساءً", "2026-05-03"),
     ("en", "this morning", "2026-05-04"), ("es", "hace dos días", "2026-05-02"),
     ("fr", "vendredi dernier", "2026-05-01"), ("ar", "منذ ثلاثة أيام", "2026-05-01")],
)  # fmt: skip
async def test_a_day_said_in_words_with_the_part_of_the_day_is_that_date(
    desk: Desk, language: str, typed: str, meant: str
) -> None:
    """Review: "ayer por la tarde" was refused ("I couldn't read that date") where "ayer"
    alone was the "Yesterday" option; so were "hace dos días" and "vendredi dernier"."""
    chat = await at_when(desk, "signal", language=language)
    (asked,) = await chat.say(typed)
    assert asked.request_location  # where did it happen: the next question
    assert await filed_date(desk, chat) == meant


@pytest.mark.parametrize(("language", "typed"), [("es", "yo"), ("fr", "moi"), ("ar", "أنا")])
async def test_me_typed_in_a_word_answers_who_was_affected(
    desk: Desk, language: str, typed: str
) -> None:
    """Review: "yo" at "Who was affected?" (the option reads "A mí") was asked again."""
    chat = await at_when(desk, "signal", language=language)
    for said in ("2026-05-01", Pick("skip"), Pick("unknown")):
        await chat.say(said)
    (asked,) = await chat.say(typed)
    assert asked.choices == ()  # what happened, in their words: no count asked
    for said in ("they came", Pick("done"), Pick("none"), *FINISH):
        await chat.say(said)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    body = open_sealed(
        desk.private_key, filed.sealed_body, org_id=desk.org.id, record_id=filed.id, kind="report"
    )
    assert body["affected"] == "me" and body["counting_unit"] == "individual"
