"""A regular check-in's time typed without saying morning or evening ("8", or "8:30" where
clocks run 1 to 12) is asked about, never guessed: read the wrong way it would remind the
defender, then alert their contacts, in the middle of every night (both backends)."""

from __future__ import annotations

from datetime import time

import pytest
from sqlalchemy import select

from core.messages import Outbound
from core.models import CheckIn, CheckInKind
from flows import country
from flows.when import halves
from tests.flows.conftest import Chat, Desk, Pick, onboard

ASKED = "Which time do you mean?"


async def routine_at(desk: Desk) -> str | None:
    async with desk.sessions() as s:
        found = await s.execute(select(CheckIn).where(CheckIn.kind == CheckInKind.routine))
        row = found.scalar_one_or_none()
        return None if row is None else row.routine_time


async def typed(chat: Chat, said: str) -> list[Outbound]:
    for step in ("/settings", Pick("routine")):
        await chat.say(step)
    return await chat.say(said)


async def test_a_bare_hour_is_asked_about_and_the_evening_taken(desk: Desk) -> None:
    """Review: "8" set a routine at 08:00 without a word about it; "2" one at 2 AM."""
    alice = await onboard(desk)
    (asked,) = await typed(alice, "8")
    assert asked.text == ASKED
    assert [c.label for c in asked.choices] == ["8:00\u202fAM", "8:00\u202fPM"]
    assert "On which days?" in await alice.text(Pick("at:20:00"))
    assert "Regular check-in set" in await alice.text(Pick("every_day"))
    assert await routine_at(desk) == "20:00"


async def test_the_choice_is_taken_by_its_number_or_a_time_typed_again(desk: Desk) -> None:
    alice, bea = await onboard(desk, "alice"), await onboard(desk, "bea")
    await typed(alice, "at 7")
    assert "On which days?" in await alice.text("1")  # the console numbers the options
    await alice.say(Pick("weekdays"))
    assert await routine_at(desk) == "07:00"
    await typed(bea, "7")
    assert "On which days?" in await bea.text("19:30")
    await bea.say(Pick("weekdays"))
    async with desk.sessions() as s:
        found = await s.execute(
            select(CheckIn.routine_time).where(CheckIn.routine_time.is_not(None))
        )
        assert sorted(found.scalars()) == ["07:00", "19:30"]


async def test_where_clocks_run_to_24_only_a_bare_hour_is_asked(desk: Desk) -> None:
    ana = await onboard(desk, "ana", language="es")
    (asked,) = await typed(ana, "8:30")
    assert "¿Qué días?" in asked.text  # 08:30: a 24-hour clock says what it means
    (asked,) = await typed(ana, "8")
    assert asked.text == "¿A qué hora te refieres?"
    assert [c.label for c in asked.choices] == ["8:00", "20:00"]


async def test_an_unambiguous_time_goes_straight_on(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("20:00", "8pm", "8 p.m.", "00:30", "13:15"):
        (asked,) = await typed(alice, said)
        assert "On which days?" in asked.text, said


async def test_a_time_with_the_part_of_the_day_in_words_goes_straight_on(desk: Desk) -> None:
    ana = await onboard(desk, "ana", language="es")
    (asked,) = await typed(ana, "a las 9 de la noche")
    assert "¿Qué días?" in asked.text
    await ana.say(Pick("every_day"))
    assert await routine_at(desk) == "21:00"


def test_which_texts_are_ambiguous() -> None:
    assert halves("8", "en") == (time(8), time(20))
    assert halves("at 12", "es") == (time(0), time(12))
    assert halves("8:30", "en") == (time(8, 30), time(20, 30))
    assert halves("8:30", "fr") is None
    assert halves("8h", "fr") is None  # a written hour: 08:00
    for clear in ("8am", "8 pm", "20:00", "0", "13", "8 ص", "8 du soir", "8 de la mañana"):
        assert halves(clear, "en") is None, clear


async def test_the_days_are_the_working_week_and_weekend_of_the_defenders_country(
    desk: Desk,
) -> None:
    """Named, not "the weekend": in Cairo the weekend is Friday and Saturday, and a routine
    "on working days" runs Sunday to Thursday."""
    layla = await onboard(desk, "layla", language="ar")  # in Bogotá
    (asked,) = await typed(layla, "20:00")
    assert [c.label for c in asked.choices] == ["كل يوم", "من الاثنين إلى الجمعة", "السبت والأحد"]
    for said in ("/cancel", "/settings", Pick("zone")):
        await layla.say(said)
    assert "تم ضبط المنطقة الزمنية" in await layla.text("القاهرة")  # "time zone set"
    (asked,) = await typed(layla, "20:00")
    assert [c.label for c in asked.choices] == ["كل يوم", "من الأحد إلى الخميس", "الجمعة والسبت"]
    await layla.say(Pick("weekdays"))
    async with desk.sessions() as s:
        routine = (await s.execute(select(CheckIn))).scalar_one()
    assert routine.routine_days == "01236"  # Monday = 0 … Sunday = 6


@pytest.mark.parametrize(
    ("zone", "locale", "working", "weekend"),
    [("America/Bogota", "en", "Monday to Friday", "Saturday and Sunday"),
     ("Africa/Cairo", "fr", "Du dimanche au jeudi", "Le vendredi et le samedi"),
     ("Asia/Tehran", "es", "De sábado a jueves", "Viernes"),
     ("Asia/Kabul", "pt", "De sábado a quarta-feira", "Quinta-feira e sexta-feira"),
     ("Etc/GMT-3", "en", "Monday to Friday", "Saturday and Sunday")],  # no country: Sat–Sun
)  # fmt: skip
def test_working_days_and_weekends_by_country(
    zone: str, locale: str, working: str, weekend: str
) -> None:
    assert country.label(country.working(zone), locale) == working
    assert country.label(country.weekend(zone), locale) == weekend
    assert sorted(country.working(zone) + country.weekend(zone)) == list("0123456")


@pytest.mark.parametrize(
    ("language", "said", "meant"),
    [("fr", "tous les soirs à 21h", "21:00"), ("fr", "tous les soirs à 9h", "21:00"),
     ("es", "todas las noches a las 10", "22:00"), ("en", "every morning at 7", "07:00"),
     ("pt", "todos os dias às 20h", "20:00")],
)  # fmt: skip
async def test_a_time_said_with_every_evening_is_taken_without_asking(
    desk: Desk, language: str, said: str, meant: str
) -> None:
    """Review: "tous les soirs à 21h" was refused ("send a time like 20:00"); the day's words
    also say which half of it a bare hour is."""
    chat = await onboard(desk, language=language)
    (asked,) = await typed(chat, said)
    assert [c.key for c in asked.choices] == ["every_day", "weekdays", "weekends"]
    await chat.say(Pick("every_day"))
    assert await routine_at(desk) == meant
