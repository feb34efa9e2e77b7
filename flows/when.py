"""Reading times people type (``45m``, ``2h30``, ``at 18:30``, a city, ``UTC-5``) and writing
times back in their zone and language.

Everything is parsed on ``core.text.fold`` output, so Arabic-Indic digits, accents and case
do not matter. Clock times are in the defender's zone; the result is always an aware UTC time.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from babel import Locale
from babel.core import get_global
from babel.dates import format_date, format_skeleton, format_time, format_timedelta

from core.i18n import SUPPORTED
from core.text import fold
from flows import said_days
from flows.spelled import as_digits

MIN_TIMER = timedelta(minutes=5)
MAX_TIMER = timedelta(hours=72)


_words = said_days.alternation


# Arabic also as typed with "ه" for the final "ة", as many keyboards and writers do.
_MIN = _words(
    "m", "min", "mins", "minute", "minutes", "minuto", "minutos", "minuta",
    "دقيقة", "دقيقه", "دقائق", "د",
)  # fmt: skip
_HOUR = _words(
    "h", "hr", "hrs", "hour", "hours", "hora", "horas", "heure", "heures",
    "ساعة", "ساعه", "ساعات", "س",
)  # fmt: skip
_IN = r"(?:(?:in|en|dans|em|بعد)\s+)?"
_AT = r"(?:at|a las|a la|a|à|as|às|الساعة|الساعه|@)"
_MINUTES = re.compile(rf"{_IN}(\d{{1,4}})\s*{_MIN}?")
_UNIT_MINUTES = re.compile(rf"{_IN}(\d{{1,4}})\s*{_MIN}")
_AN_HOUR = re.compile(rf"{_IN}{_words('ساعة', 'ساعه')}")
_HOURS = re.compile(rf"{_IN}(\d{{1,3}})(?:[.,](\d))?\s*{_HOUR}\s*(?:(\d{{1,2}})\s*{_MIN}?)?")
# The part of the day said after the hour: am and pm, in words in each language ("9 de la
# noche", "8 du matin"), and Arabic's "ص" and "م" as format_when writes them, and in words
# (folded: صباحًا, مساءً, ليلًا).
_MORNING = (
    "am", "a.m.", "in the morning", "de la mañana", "de la madrugada", "du matin", "da manhã",
    "de manhã", "da madrugada", "صباحا", "ص",
)  # fmt: skip
_EVENING = (
    "pm", "p.m.", "in the afternoon", "in the evening", "de la tarde", "de l'après-midi",
    "de l’après-midi", "du soir", "da tarde", "مساء", "م",
)  # fmt: skip
# At night: 12 is midnight, 1 to 5 the small hours, 6 to 11 the evening's.
_NIGHT = ("at night", "de la noche", "de la nuit", "da noite", "à noite", "ليلا")
_PERIODS = {
    fold(w): part
    for part, ws in (("am", _MORNING), ("pm", _EVENING), ("night", _NIGHT))
    for w in ws
}
# A daily time said with its day ("tous les soirs à 21h", "every day at 8pm", "9 pm every
# night"), before or after the time: the part of the day it names (None: any).
_DAILY = {
    fold(w): part
    for part, ws in (
        (None, ("every day", "everyday", "each day", "daily", "todos los dias", "cada dia",
                "diariamente", "tous les jours", "chaque jour", "todos os dias", "كل يوم",
                "يوميا")),
        ("am", ("every morning", "each morning", "todas las mañanas", "cada mañana",
                "tous les matins", "chaque matin", "todas as manhãs", "cada manhã", "كل صباح")),
        ("pm", ("every evening", "each evening", "every afternoon", "todas las tardes",
                "cada tarde", "tous les soirs", "chaque soir", "todas as tardes", "كل مساء")),
        ("night", ("every night", "each night", "nightly", "todas las noches", "cada noche",
                   "toutes les nuits", "chaque nuit", "todas as noites", "cada noite",
                   "كل ليلة", "كل ليله")),
    )
    for w in ws
}  # fmt: skip
_DAILY_SAID = re.compile(
    r"^(?:(?P<before>{0})\s*,?\s+)?(?P<rest>.*?)(?:,?\s+(?P<after>{0}))?$".format(
        "|".join(re.escape(w) for w in sorted(_DAILY, key=len, reverse=True))
    )
)
_CLOCK = re.compile(
    r"(\d{1,2})(?:\s*[:h.]\s*(\d{2})|h)?\s*("
    + "|".join(re.escape(w) for w in sorted(_PERIODS, key=len, reverse=True))
    + ")?"
)
_WRITTEN_HOUR = re.compile(r"(\d{1,2})h([0-5]\d)?")  # "20h", "18h30"; not "in 20h", "20 hours"
_HOUR_WRITERS = ("fr", "es", "pt")
_OFFSET = re.compile(r"(?:utc|gmt)?\s*([+\-\u2212])\s*(\d{1,2})(?::?(\d{2}))?")
_DATE_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DATE_DMY = re.compile(r"(\d{1,2})[/.\-](\d{1,2})(?:[/.\-](\d{2,4}))?")
# Offsets that are not whole hours, mapped to a zone without daylight saving.
_ODD_OFFSETS = {
    (5, 30): "Asia/Kolkata",
    (5, 45): "Asia/Kathmandu",
    (4, 30): "Asia/Kabul",
    (3, 30): "Asia/Tehran",
    (6, 30): "Asia/Yangon",
    (9, 30): "Australia/Darwin",
    (-9, 30): "Pacific/Marquesas",
}


class WhenError(ValueError):
    """``reason``: "unparsed", "too_soon" or "too_late"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_clock(text: str) -> time | None:
    """``20:00``, ``8pm``, ``20h``, ``at 18:30``, ``a las 9 de la noche``, ``tous les soirs
    à 9h`` → a wall-clock time."""
    words, daily = _daily(text)
    m = _CLOCK.fullmatch(words)
    if m is None:
        return None
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    part = _PERIODS[m.group(3)] if m.group(3) else daily if 1 <= hour <= 12 else None
    if part:
        if not 1 <= hour <= 12:
            return None
        if part == "night":
            part = "pm" if 6 <= hour <= 11 else "am"
        hour = hour % 12 + (12 if part == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def _daily(text: str) -> tuple[str, str | None]:
    """``text`` folded, without "every day" (or evening...) and "at" around its time; and the
    part of the day that said ("pm" for "tous les soirs", None for "every day" or none)."""
    m = _DAILY_SAID.fullmatch(fold(text))
    assert m is not None  # every part of it is optional
    said = m.group("before") or m.group("after")
    words = re.sub(rf"^{_AT}\s+", "", m.group("rest"))
    return words, _DAILY[said] if said else None


def halves(text: str, locale: str | None) -> tuple[time, time] | None:
    """The morning's and the evening's of a time of day typed without saying which, where it
    could be either: a bare hour ("8", "at 8"), or, where clocks run 1 to 12 (English,
    Arabic), any hour from 1 to 12 ("8:30"). None when the text says (am, pm, "20:00", "8h").
    A regular check-in asks which (``flows.setup``): read the wrong way, it would wake the
    defender, then their contacts, at night, every night, or come twelve hours late."""
    words, daily = _daily(text)
    m = _CLOCK.fullmatch(words)
    if m is None or m.group(3) is not None or daily or not 1 <= int(m.group(1)) <= 12:
        return None
    bare = m.group(2) is None and not words.endswith("h")
    if not (bare or _twelve_hour(locale)):
        return None
    hour, minute = int(m.group(1)) % 12, int(m.group(2) or 0)
    if minute > 59:
        return None
    return time(hour, minute), time(hour + 12, minute)


def format_clock(clock: time, locale: str) -> str:
    """A wall-clock time as the language writes it ("8:30 PM", "20:30")."""
    return format_time(clock, "short", locale=locale)


def parse_due(text: str, *, now: datetime, zone_name: str, locale: str | None = None) -> datetime:
    """A deadline from a duration (``45m``, ``2h30``, ``1.5h``) or a clock time (``at 18:30``).
    A time that could be either half of the day (``halves``: "at 8" in any language, and
    "at 8:30" where clocks run 1 to 12, English, Arabic) is the nearer of the two: typed at
    3 pm, tonight's, not tomorrow morning's. Where "20h" is also written for 20:00 (French,
    Spanish, Portuguese), the sooner of the two."""
    words = fold(text)
    delta = duration(words)
    if delta is not None:
        due = now + delta
        written = _WRITTEN_HOUR.fullmatch(words)
        if written and locale in _HOUR_WRITERS and 13 <= int(written[1]) <= 23:
            # "20h", "18h30": French and Portuguese (and many Spanish) speakers' way of
            # writing a time of day. Read both ways, the sooner deadline: a check-in missed
            # tonight is never noticed only tomorrow.
            at = time(int(written[1]), int(written[2] or 0))
            due = min(due, next_local(at, now=now, zone_name=zone_name))
    else:
        daily = _DAILY_SAID.fullmatch(words)
        if daily and (daily.group("before") or daily.group("after")):
            raise WhenError("unparsed")  # "every day at 8pm": a regular check-in's, not this
        said = _CLOCK.search(words)
        marked = said is not None and said.group(3) is not None  # pm, ص, de la noche…
        if not (re.match(rf"{_AT}\s", words) or ":" in words or marked):
            raise WhenError("unparsed")
        clock = parse_clock(words)
        if clock is None:
            raise WhenError("unparsed")
        due = next_local(clock, now=now, zone_name=zone_name)
        if (either := halves(words, locale)) is not None:  # the sooner: never 12 hours late
            due = min(next_local(t, now=now, zone_name=zone_name) for t in either)
    if due - now < MIN_TIMER:
        raise WhenError("too_soon")
    if due - now > MAX_TIMER:
        raise WhenError("too_late")
    return due


def duration(text: str) -> timedelta | None:
    """A duration as typed (``45m``, ``2h30``, ``1.5h``, ``in 20 minutes``), also in words
    (``thirty minutes``, ``dos horas``: ``flows.spelled``, then with its unit); else None."""
    words = fold(text)
    spelled = not any(c.isdigit() for c in words)
    if spelled:
        if _AN_HOUR.fullmatch(words):  # Arabic: "ساعة" alone is "an hour"
            return timedelta(hours=1)
        words = as_digits(words)
    # In words, minutes need their unit: "thirty" alone is a number (an answer), no timer.
    if m := (_UNIT_MINUTES if spelled else _MINUTES).fullmatch(words):
        return timedelta(minutes=int(m.group(1)))
    if m := _HOURS.fullmatch(words):
        tenths, minutes = int(m.group(2) or 0), int(m.group(3) or 0)
        return timedelta(hours=int(m.group(1)), minutes=tenths * 6 + minutes)
    return None


def _twelve_hour(locale: str | None) -> bool:
    """Whether the language's clock runs 1 to 12 (CLDR's short time has "h", not "H")."""
    return locale is not None and "h" in str(Locale.parse(locale).time_formats["short"])


def next_local(clock: time, *, now: datetime, zone_name: str) -> datetime:
    """The next moment the defender's wall clock shows ``clock`` (DST-aware), in UTC."""
    tz = zone(zone_name)
    today = now.astimezone(tz).date()
    for day in (today, today + timedelta(days=1), today + timedelta(days=2)):
        candidate = datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a wall-clock time recurs within two days")


def parse_date(text: str, *, today: date) -> date | None:
    """The one date ``text`` means (``dates``); None when it means none, or two."""
    found = dates(text, today=today)
    return found[0] if len(found) == 1 else None


def dates(text: str, *, today: date) -> tuple[date, ...]:
    """The dates ``text`` can mean, never one in the future: "yesterday evening", "hace dos
    días", "lundi dernier" (a day in words: ``flows.said_days``); ``2024-05-03``; ``3/5/2024``
    or ``3/5`` (without a year, the last one gone by: "29/2" typed in 2026 is 2024's), read
    day first and month first. Both when both are dates, and different: "5/3" is the 5th of
    March to some, May 3rd to others, whatever the language (a report asks which:
    ``flows.report``); "13/5" and "5/13" are one date each. Empty when it is no date."""
    words = fold(text)
    if (said := said_days.day(words, today)) is not None:
        return (said,) if _past(said, today) else ()
    if m := _DATE_ISO.fullmatch(words):
        found = _date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return (found,) if found is not None and _past(found, today) else ()
    m = _DATE_DMY.fullmatch(words)
    if m is None:
        return ()
    first, second = int(m.group(1)), int(m.group(2))
    readings = []
    for day, month in ((first, second), (second, first)):
        if m.group(3):
            year = int(m.group(3))
            found = _date(year + 2000 if year < 100 else year, month, day)
        else:  # the last one gone by: this year's, last year's (29/2: up to 8 years back)
            found = next(
                (
                    d
                    for year in range(today.year, today.year - 9, -1)
                    if (d := _date(year, month, day)) is not None and d <= today
                ),
                None,
            )
        if found is not None and _past(found, today) and found not in readings:
            readings.append(found)
    return tuple(readings)


def _date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _past(found: date, today: date) -> bool:
    return date(1900, 1, 1) <= found <= today


def format_day(day: date, locale: str) -> str:
    """A date written out, never in digits a reader could take the other way: "March 5,
    2026", "5 de marzo de 2026"."""
    return format_date(day, "long", locale=locale)


@cache
def _zone_names() -> dict[str, str]:
    names: dict[str, str] = {"utc": "UTC", "gmt": "UTC"}
    zones = available_timezones()  # slow: reads the whole tz database
    for tz in sorted(zones):
        if "/" not in tz or tz.startswith(("Etc/", "SystemV/", "US/")):
            continue
        names.setdefault(fold(tz), tz)
        names.setdefault(fold(tz.rsplit("/", 1)[1].replace("_", " ")), tz)
    for language in SUPPORTED:
        for tz, info in Locale.parse(language).time_zones.items():
            city = info.get("city")
            if city and tz in zones:
                names.setdefault(fold(city), tz)
    # A country with one time zone ("Colombia", "El Salvador", "مصر"), after the cities.
    territory_zones = get_global("territory_zones")
    for language in SUPPORTED:
        for code, country in Locale.parse(language).territories.items():
            found = [tz for tz in territory_zones.get(code, ()) if tz in zones]
            if len(found) == 1:
                names.setdefault(fold(country), found[0])
    return names


def parse_zone(text: str) -> str | None:
    """An IANA zone from a city or a country with one zone (in any of our languages), also
    as "town, country", or a UTC offset; None if unknown."""
    words = fold(text)
    if m := _OFFSET.fullmatch(words):
        sign = -1 if m.group(1) != "+" else 1
        hours, minutes = int(m.group(2)), int(m.group(3) or 0)
        if minutes:
            return _ODD_OFFSETS.get((sign * hours, minutes))
        if hours == 0:
            return "UTC"
        if sign * hours < -12 or sign * hours > 14:
            return None
        return f"Etc/GMT{'-' if sign > 0 else '+'}{hours}"  # POSIX names invert the sign
    # "Bogotá, Colombia", "القاهرة، مصر": the place as written, else its parts, the town first
    for part in (words, *re.split(r"[,،]", words)):
        part = part.strip()
        found = _zone_names().get(part) or _zone_names().get(part.replace(" ", "_"))
        if found:
            return found
    return None


def format_when(moment: datetime, *, now: datetime, zone_name: str, locale: str) -> str:
    """``20:30`` today, ``Tue 20:30`` on another day: in the defender's zone and language."""
    tz = zone(zone_name)
    if moment.astimezone(tz).date() == now.astimezone(tz).date():
        return format_time(moment, "short", tzinfo=tz, locale=locale)
    twelve = _twelve_hour(locale)
    return format_skeleton("Ehm" if twelve else "EHm", moment, tzinfo=tz, locale=locale)


def format_in(moment: datetime, *, now: datetime, locale: str) -> str:
    """``in 45 minutes``, ``in 3 hours``: minutes up to two hours, then whole hours (half up)."""
    delta = moment - now
    minutes = round(abs(delta).total_seconds() / 60)
    if minutes >= 120:
        hours = (minutes + 30) // 60
        delta = timedelta(hours=hours if delta >= timedelta(0) else -hours)
        return format_timedelta(delta, add_direction=True, threshold=1, locale=locale)
    return format_timedelta(delta, add_direction=True, threshold=2.1, locale=locale)
