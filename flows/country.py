"""The defender's country, from their time zone (CLDR): for the desk's triage of their reports,
and their regular check-in's days as the country keeps them: its working days and its weekend
(Friday and Saturday in Egypt, Sunday to Thursday at work there), Saturday and Sunday where the
zone names no country (UTC+3). Days are Python's weekday numbers written as digits, Monday =
"0" (``CheckIn.routine_days``)."""

from __future__ import annotations

from babel import Locale
from babel.core import get_global
from babel.dates import get_day_names

from core.i18n import gettext

EVERY_DAY = "0123456"


def country(zone_name: str) -> str | None:
    """The country of a time zone; None for offsets."""
    territory = get_global("zone_territories").get(zone_name)
    return territory if territory and territory not in ("ZZ", "001") else None


def weekend(zone_name: str) -> str:
    """The weekend's days where ``zone_name`` is (Babel counts Monday as 0, as Python does)."""
    where = country(zone_name)
    found = Locale.parse(f"und_{where}") if where else None
    start, end = (found.weekend_start, found.weekend_end) if found else (5, 6)
    return _span(start, end)


def working(zone_name: str) -> str:
    """Every other day: the working week."""
    rest = weekend(zone_name)
    return "".join(d for d in EVERY_DAY if d not in rest)


def label(days: str, locale: str) -> str:
    """Days in a row ("Sunday to Thursday", "Friday and Saturday", "Friday"), in ``locale``,
    from the first day after the gap (a week that runs over Monday starts where it starts)."""
    names = get_day_names("wide", locale=locale)
    order = [int(d) for d in days]
    gap = next((d for d in order if (d - 1) % 7 not in order), order[0])
    order = sorted(order, key=lambda d: (d - gap) % 7)
    first, last = str(names[order[0]]), str(names[order[-1]])
    _ = gettext(locale)
    if len(order) == 1:
        text = first
    elif len(order) == 2:
        # TRANSLATORS: two days of the week, as a choice: "Saturday and Sunday".
        text = _("{first} and {last}").format(first=first, last=last)
    else:
        # TRANSLATORS: days of the week in a row, as a choice: "Monday to Friday".
        text = _("{first} to {last}").format(first=first, last=last)
    return text[:1].upper() + text[1:]


def _span(start: int, end: int) -> str:
    return "".join(sorted(str((start + i) % 7) for i in range((end - start) % 7 + 1)))
