"""A day said in words, as people date what happened to them: "ayer por la tarde", "hier
soir", "hace dos días", "il y a 3 jours", "منذ يومين", "last Monday", "el lunes", "na
segunda-feira à noite". Words in ``core.text.fold`` form (no accents, no hamza, no tanween),
in every language we speak; the part of the day people add does not change the date."""

from __future__ import annotations

import re
from datetime import date, timedelta

from babel import Locale

from core.text import fold
from flows.spelled import as_digits


def alternation(*alternatives: str) -> str:
    """A regex alternation of words in ``fold`` form, as the text they are matched in: the
    Arabic plural "دقائق" folds to "دقايق" (its hamza is a combining mark). Also
    ``flows.when``'s."""
    return "(?:" + "|".join(re.escape(fold(w)) for w in alternatives) + ")"


_words = alternation


DAYS_AGO = {
    fold(w): ago
    for ago, ws in (
        (0, ("today", "hoy", "aujourd'hui", "aujourd’hui", "aujourdhui", "hoje", "اليوم",
             "this morning", "this afternoon", "this evening", "tonight", "esta mañana",
             "esta tarde", "esta noche", "ce matin", "cet après-midi", "ce soir", "cette nuit",
             "esta manhã", "esta noite", "هذا الصباح", "هذا المساء", "الليلة", "هذه الليلة")),
        (1, ("yesterday", "ayer", "hier", "ontem", "أمس", "البارحة", "البارحه", "last night",
             "anoche")),
        (2, ("the day before yesterday", "day before yesterday", "anteayer", "antier",
             "avant-hier", "avant hier", "anteontem", "أول أمس", "اول امس")),
    )
    for w in ws
}  # fmt: skip
_PART = "(?:(?:in the|on|por la|en la|a la|de la|de|da|a|dans la|في)\\s+)?" + _words(
    "morning", "afternoon", "evening", "night", "mañana", "madrugada", "tarde", "noche",
    "matin", "après-midi", "soir", "soirée", "nuit", "manhã", "noite",
    "صباحًا", "صباح", "ظهرًا", "عصرًا", "مساءً", "مساء", "ليلًا", "ليلة",
)  # fmt: skip


def _said(core: str) -> re.Pattern[str]:
    """``core`` with a part of the day before or after it ("mañana" alone is no day)."""
    return re.compile(rf"(?:{_PART}\s+)?(?:{core})(?:\s*,?\s+{_PART})?")


_NAMED = _said(rf"({_words(*DAYS_AGO)})")
# "N days ago": N in digits or in words (``flows.spelled``); weeks too. Arabic's dual is one
# word ("يومين": two days).
_DAY_UNIT = _words("day", "days", "dia", "dias", "jour", "jours", "يوم", "ايام", "أيام")
_WEEK_UNIT = _words("week", "weeks", "semana", "semanas", "semaine", "semaines", "أسبوع",
                    "اسبوع", "أسابيع", "اسابيع")  # fmt: skip
_UNITS = rf"{_DAY_UNIT}|{_WEEK_UNIT}"
_AGO = _said(
    rf"(?P<n>\S+) (?P<unit>{_UNITS}) (?:ago|atras)"
    rf"|(?:hace|il y a|ha|faz) (?P<n2>\S+) (?P<unit2>{_UNITS})"
    rf"|(?:منذ|قبل) (?:(?P<n3>\S+) )?(?P<unit3>{_UNITS}|يومين|اسبوعين)"
)
_DUAL = {fold("يومين"): (2, 1), fold("اسبوعين"): (2, 7)}
# Weekday names (Monday = 0) in our languages, Babel's and the short Portuguese ones, with
# the words around them: "on", "el", "le", "na", "يوم"; "last", "pasado", "dernier", "passada".
_WEEKDAYS = {
    fold(str(name)): number
    for code in ("en", "es", "fr", "pt", "ar")
    for number, name in Locale.parse(code).days["format"]["wide"].items()
} | {fold(f"{w}"): n for n, w in enumerate(("segunda", "terça", "quarta", "quinta", "sexta"))}
_LAST = _words("last", "past", "pasado", "pasada", "dernier", "derniere", "passado", "passada",
               "ultimo", "ultima", "الماضي", "الماضية")  # fmt: skip
_WEEKDAY = _said(
    rf"(?:(?P<last>{_LAST}) )?(?:(?:on|el|le|na|no|يوم) )?"
    rf"(?P<day>{_words(*_WEEKDAYS)})(?: (?P<last2>{_LAST}))?"
)
_MAX_DAYS = 3660  # "hace 500 semanas" is no date a report needs


def day(words: str, today: date) -> date | None:
    """The date ``words`` (folded) says, counted back from ``today``; None if it says none.
    A weekday is its latest: today's for "Monday" said on a Monday, a week ago for "last
    Monday" said then."""
    if m := _NAMED.fullmatch(words):
        return today - timedelta(days=DAYS_AGO[m.group(1)])
    if m := _AGO.fullmatch(words):
        return _ago(m, today)
    if m := _WEEKDAY.fullmatch(words):
        back = (today.weekday() - _WEEKDAYS[m.group("day")]) % 7
        if back == 0 and (m.group("last") or m.group("last2")):
            back = 7
        return today - timedelta(days=back)
    return None


def _ago(m: re.Match[str], today: date) -> date | None:
    unit = m.group("unit") or m.group("unit2") or m.group("unit3")
    if unit in _DUAL:
        count, size = _DUAL[unit]
    else:
        said = m.group("n") or m.group("n2") or m.group("n3") or "1"
        number = as_digits(said)
        if not number.isdigit():
            return None
        count = int(number)
        size = 7 if re.fullmatch(_WEEK_UNIT, unit) else 1
    days = count * size
    return today - timedelta(days=days) if days <= _MAX_DAYS else None
