"""Times as people type them, in their zone; written back in their language."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from flows.when import (
    WhenError,
    dates,
    format_when,
    halves,
    next_local,
    parse_clock,
    parse_date,
    parse_due,
    parse_zone,
)

NOW = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # Saturday; Europe switches to summer time Sunday


@pytest.mark.parametrize(
    ("typed", "minutes"),
    [("45m", 45), ("45", 45), ("45 min", 45), ("2h30", 150), ("2 h 30 min", 150), ("1.5h", 90),
     ("in 2h", 120), ("en 3 horas", 180), ("dans 1 heure", 60), ("٤٥ دقيقة", 45), ("72h", 4320),
     # Arabic counts 3 to 10 in the plural ("دقائق", its hamza folded away like any accent),
     # and many type the final "ة" as "ه"
     ("١٠ دقائق", 10), ("بعد 5 دقائق", 5), ("30 دقيقه", 30), ("2 ساعه", 120)],
)  # fmt: skip
def test_it_reads_durations(typed: str, minutes: int) -> None:
    due = parse_due(typed, now=NOW, zone_name="UTC")
    assert (due - NOW).total_seconds() == minutes * 60


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("2m", "too_soon"),
        ("73h", "too_late"),
        ("tomorrowish", "unparsed"),
        ("at 25:00", "unparsed"),
        ("every day at 8pm", "unparsed"),  # a regular check-in's time, not a one-off's
        ("tous les soirs à 21h", "unparsed"),
    ],
)
def test_it_refuses_durations_it_cannot_use(typed: str, reason: str) -> None:
    with pytest.raises(WhenError) as raised:
        parse_due(typed, now=NOW, zone_name="UTC")
    assert raised.value.reason == reason


def test_it_reads_a_clock_time_in_the_zone_across_a_dst_change() -> None:
    # 21:00 in Madrid now; "at 09:30" is tomorrow, after clocks go forward (UTC+2).
    due = parse_due("at 09:30", now=NOW, zone_name="Europe/Madrid")
    assert due == datetime(2026, 3, 29, 7, 30, tzinfo=UTC)
    assert parse_due("à 21h30", now=NOW, zone_name="Europe/Madrid") == datetime(
        2026, 3, 28, 20, 30, tzinfo=UTC
    )
    assert next_local(time(2, 30), now=NOW, zone_name="Europe/Madrid") > NOW  # a skipped hour


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("tous les soirs à 21h", time(21)), ("tous les soirs à 9h", time(21)),
     ("chaque matin à 7h", time(7)), ("todas las noches a las 9", time(21)),
     ("cada noche a las 2", time(2)), ("todos os dias às 20h", time(20)),
     ("كل مساء الساعة 9", time(21)), ("every day at 8pm", time(20)),
     ("9pm every night", time(21)), ("8:30, every morning", time(8, 30))],
)  # fmt: skip
def test_a_daily_time_is_read_with_its_day(typed: str, meant: time) -> None:
    """ "Every evening at 9" is 21:00: the words for the day say which half; "every day at 8"
    does not (asked: ``halves``)."""
    assert parse_clock(typed) == meant
    assert halves(typed, "en") is None
    assert halves("every day at 8", "en") == (time(8), time(20))


def test_it_reads_clock_times_and_dates() -> None:
    assert parse_clock("20:00") == parse_clock("8pm") == parse_clock("20h") == time(20, 0)
    assert parse_clock("at 7:05 am") == time(7, 5) and parse_clock("13pm") is None
    assert parse_clock("الساعة ٨:٣٠") == parse_clock("الساعه ٨:٣٠") == time(8, 30)
    today = date(2026, 5, 4)
    assert parse_date("2026-05-03", today=today) == date(2026, 5, 3)
    assert parse_date("13/5", today=today) == date(2025, 5, 13)
    assert parse_date("3/5", today=today) is None  # two dates: a report asks which
    assert dates("3/5", today=today) == (date(2026, 5, 3), date(2026, 3, 5))
    assert parse_date("30/12", today=today) == date(2025, 12, 30)  # never in the future
    for said, ago in (("ayer por la tarde", 1), ("hier soir", 1), ("ontem à noite", 1),
                      ("أمس مساءً", 1), ("مساء أمس", 1), ("Yesterday, in the evening", 1),
                      ("anoche", 1), ("this morning", 0), ("hoje de manhã", 0),
                      ("avant-hier", 2), ("anteayer por la noche", 2)):  # fmt: skip
        assert dates(said, today=today) == (today - timedelta(days=ago),), said
    assert dates("mañana", today=today) == dates("tomorrow evening", today=today) == ()
    for said, ago in (("hace dos días", 2), ("il y a 3 jours", 3), ("two weeks ago", 14),
                      ("há três dias", 3), ("منذ يومين", 2), ("منذ ثلاثة أيام", 3),
                      ("el viernes por la noche", 3), ("lundi dernier", 7), ("Monday", 0),
                      ("na sexta-feira", 3), ("sábado passado", 2), ("الجمعة الماضية", 3),
                      ("يوم الأحد", 1)):  # fmt: skip
        assert dates(said, today=today) == (today - timedelta(days=ago),), said  # a Monday
    assert dates("hace mucho", today=today) == dates("hace 900 semanas", today=today) == ()
    assert parse_date("29/2", today=today) == date(2024, 2, 29)  # the last one there was
    assert parse_date("29/02", today=date(2028, 3, 1)) == date(2028, 2, 29)
    assert (
        parse_date("31/02/2026", today=today) is None and parse_date("soon", today=today) is None
    )


@pytest.mark.parametrize(
    ("typed", "zone"),
    [("Bogota", "America/Bogota"), ("bogotá", "America/Bogota"), ("Le Caire", "Africa/Cairo"),
     ("القاهرة", "Africa/Cairo"), ("Ciudad de México", "America/Mexico_City"),
     ("sao paulo", "America/Sao_Paulo"), ("UTC-5", "Etc/GMT+5"), ("GMT+3", "Etc/GMT-3"),
     ("+05:30", "Asia/Kolkata"), ("utc", "UTC"), ("Atlantis", None), ("UTC+15", None),
     ("+02:17", None),
     # as people write where they are: with the country, or the country alone (one zone)
     ("Bogotá, Colombia", "America/Bogota"), ("القاهرة، مصر", "Africa/Cairo"),
     ("San Salvador, El Salvador", "America/El_Salvador"), ("Colombia", "America/Bogota"),
     ("Siria", "Asia/Damascus"), ("Brasil", None), ("Atlantis, Colombia", "America/Bogota")],
)  # fmt: skip
def test_it_finds_a_zone_by_city_or_offset(typed: str, zone: str | None) -> None:
    assert parse_zone(typed) == zone


def test_it_writes_times_in_the_zone_and_language() -> None:
    later = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert format_when(later, now=NOW, zone_name="America/Bogota", locale="es") == "18:00"
    assert format_when(later, now=NOW, zone_name="Asia/Tokyo", locale="en") == "8:00\u202fAM"
    next_day = datetime(2026, 3, 29, 23, 0, tzinfo=UTC)  # Monday 8:00 in Tokyo, Sunday there now
    assert format_when(next_day, now=NOW, zone_name="Asia/Tokyo", locale="en") == "Mon 8:00 AM"


@pytest.mark.parametrize(
    ("typed", "locale", "due"),
    [
        ("at 8:30", "en", datetime(2026, 3, 28, 20, 30, tzinfo=UTC)),  # tonight, not 08:30
        ("at 9", "en", datetime(2026, 3, 28, 21, 0, tzinfo=UTC)),
        ("at 8:30 am", "en", datetime(2026, 3, 29, 8, 30, tzinfo=UTC)),
        ("at 20:30", "en", datetime(2026, 3, 28, 20, 30, tzinfo=UTC)),
        ("الساعة ٨:٣٠", "ar", datetime(2026, 3, 28, 20, 30, tzinfo=UTC)),
        ("الساعة ٩ م", "ar", datetime(2026, 3, 28, 21, 0, tzinfo=UTC)),
        ("8:30 ص", "ar", datetime(2026, 3, 29, 8, 30, tzinfo=UTC)),
        ("الساعة ٩ مساءً", "ar", datetime(2026, 3, 28, 21, 0, tzinfo=UTC)),
        ("الساعة ٨ صباحًا", "ar", datetime(2026, 3, 29, 8, 0, tzinfo=UTC)),
        ("a las 8:30", "es", datetime(2026, 3, 29, 8, 30, tzinfo=UTC)),  # a 24-hour clock
        ("à 9h", "fr", datetime(2026, 3, 29, 9, 0, tzinfo=UTC)),
    ],
)
def test_a_clock_time_on_a_twelve_hour_clock_is_the_next_one_it_can_mean(
    typed: str, locale: str, due: datetime
) -> None:
    """Where clocks run 1 to 12 (English, Arabic: "8:30 PM", "8:30 م"), "at 8:30" typed at
    8 pm means tonight, not tomorrow morning: the deadline (and the escalation) 12 hours
    later. The nearer of the two; "am"/"pm" (ص/م) decide; 24-hour languages as before."""
    assert parse_due(typed, now=NOW, zone_name="UTC", locale=locale) == due


@pytest.mark.parametrize(
    ("typed", "locale", "due"),
    [
        ("21h", "fr", datetime(2026, 3, 28, 21, 0, tzinfo=UTC)),  # tonight, not in 21 hours
        ("21h30", "pt", datetime(2026, 3, 28, 21, 30, tzinfo=UTC)),
        ("22h", "es", datetime(2026, 3, 28, 22, 0, tzinfo=UTC)),
        ("21h", "en", datetime(2026, 3, 29, 17, 0, tzinfo=UTC)),  # English: 21 hours
        ("dans 21h", "fr", datetime(2026, 3, 29, 17, 0, tzinfo=UTC)),  # "in": a duration
        ("2h30", "fr", datetime(2026, 3, 28, 22, 30, tzinfo=UTC)),  # the example: a duration
        ("20h", "fr", datetime(2026, 3, 29, 16, 0, tzinfo=UTC)),  # 20:00 is a day away
    ],
)
def test_20h_where_it_is_written_for_a_time_of_day_is_the_sooner_reading(
    typed: str, locale: str, due: datetime
) -> None:
    """French, Portuguese and Spanish speakers write 20:00 as "20h": typed at 20:00, "21h"
    meant in an hour, and set a deadline 21 hours away."""
    assert parse_due(typed, now=NOW, zone_name="UTC", locale=locale) == due


@pytest.mark.parametrize(
    ("typed", "minutes"),
    [("thirty minutes", 30), ("in twenty minutes", 20), ("an hour", 60), ("in two hours", 120),
     ("forty-five minutes", 45), ("Forty five mins", 45), ("sixty minutes", 60),
     ("twelve hours", 720), ("half an hour", 30), ("one hour thirty", 90),
     ("dos horas", 120), ("en una hora", 60), ("treinta minutos", 30), ("media hora", 30),
     ("cuarenta y cinco minutos", 45), ("diez minutos", 10), ("seis horas", 360),
     ("dans une heure", 60), ("trente minutes", 30), ("quarante-cinq minutes", 45),
     ("deux heures", 120), ("une demi-heure", 30), ("vingt minutes", 20),
     ("duas horas", 120), ("em uma hora", 60), ("meia hora", 30), ("quarenta e cinco minutos", 45),
     ("três horas", 180), ("quinze minutos", 15),
     ("ثلاثين دقيقة", 30), ("بعد ساعتين", 120), ("ساعة", 60), ("بعد ساعة", 60),
     ("ثلاث ساعات", 180), ("عشر دقائق", 10), ("خمس وأربعين دقيقة", 45), ("نصف ساعة", 30),
     ("ستين دقيقة", 60), ("عشرين دقيقه", 20)],
)  # fmt: skip
def test_it_reads_durations_in_words(typed: str, minutes: int) -> None:
    """Review: "thirty minutes" or "dos horas" got "I couldn't read that time"."""
    due = parse_due(typed, now=NOW, zone_name="UTC")
    assert (due - NOW).total_seconds() == minutes * 60


@pytest.mark.parametrize(
    ("typed", "reason"),
    [("thirty", "unparsed"), ("one", "unparsed"), ("an", "unparsed"), ("a la una", "unparsed"),
     ("five minutes ago", "unparsed"), ("hour", "unparsed"), ("two minutes", "too_soon"),
     ("one", "unparsed"), ("ten hours tomorrow", "unparsed"), ("a minute", "too_soon")],
)  # fmt: skip
def test_it_takes_no_other_words_for_a_duration(typed: str, reason: str) -> None:
    """Only a number in words with its unit: a bare "thirty" (an answer, a count) is no
    timer, nor "a la una" (a time of day, one o'clock) read as one minute."""
    with pytest.raises(WhenError) as raised:
        parse_due(typed, now=NOW, zone_name="UTC")
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("typed", "locale", "due"),
    [
        ("a las 8", "es", datetime(2026, 3, 28, 20, 0, tzinfo=UTC)),  # tonight
        ("à 8", "fr", datetime(2026, 3, 28, 20, 0, tzinfo=UTC)),
        ("às 8", "pt", datetime(2026, 3, 28, 20, 0, tzinfo=UTC)),
        ("a las 8:00", "es", datetime(2026, 3, 29, 8, 0, tzinfo=UTC)),  # minutes: 24-hour
        ("à 8h", "fr", datetime(2026, 3, 29, 8, 0, tzinfo=UTC)),  # a written hour
        ("a las 20", "es", datetime(2026, 3, 28, 20, 0, tzinfo=UTC)),
    ],
)
def test_a_bare_hour_on_a_24_hour_clock_is_the_sooner_it_can_mean(
    typed: str, locale: str, due: datetime
) -> None:
    """Review: "a las 8" typed at 15:00 set the deadline at 08:00 the next morning, 12 hours
    after the 20:00 the defender meant: a bare hour is either half of the day in speech."""
    now = datetime(2026, 3, 28, 15, 0, tzinfo=UTC)
    assert parse_due(typed, now=now, zone_name="UTC", locale=locale) == due


@pytest.mark.parametrize(
    ("typed", "clock"),
    [("a las 9 de la noche", time(21)), ("8 de la mañana", time(8)), ("3 de la tarde", time(15)),
     ("12 de la noche", time(0)), ("2 de la madrugada", time(2)), ("8 du matin", time(8)),
     ("à 9 du soir", time(21)), ("3 de l’après-midi", time(15)), ("às 9 da noite", time(21)),
     ("7 da manhã", time(7)), ("9 in the evening", time(21)), ("11 at night", time(23)),
     ("12 at night", time(0)), ("١٢ ليلًا", time(0)), ("٩ مساءً", time(21)),
     ("13 de la tarde", None), ("9 de la semana", None)],
)  # fmt: skip
def test_it_reads_the_part_of_the_day_said_in_words(typed: str, clock: time | None) -> None:
    """People say the part of the day after the hour: read wrongly (or refused), a regular
    check-in would wake them, then their contacts, at night. At night, 12 is midnight."""
    assert parse_clock(typed) == clock


def test_a_timer_until_a_time_said_in_words_is_the_next_one() -> None:
    # 20:00 UTC is 21:00 in Madrid: "a las 10 de la noche" is in an hour, not tomorrow morning
    due = parse_due("a las 10 de la noche", now=NOW, zone_name="Europe/Madrid", locale="es")
    assert due == datetime(2026, 3, 28, 21, 0, tzinfo=UTC)
