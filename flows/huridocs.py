"""HURIDOCS Events Standard Formats, as far as a defender answers them (FIELD.md, section c).

The bot asks in plain words; these tables map the answers to codes: types of acts (mt4),
perpetrator types (mt24), date types (mt48), counting units (mt7) and priority (mt46). The
desk confirms the codes, reliability and involvement afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from core.vocabulary import ACTS as ACTS
from core.vocabulary import ANSWERS
from flows.context import Context

PERPETRATORS = (
    "police", "military", "intelligence", "officials", "armed_group", "private_security",
    "company", "mob", "known", "unknown", "other",
)  # fmt: skip
# A choice of "when" → (date, HURIDOCS mt48 date type), from today in the defender's zone.
WHEN: dict[str, Callable[[date], tuple[date | None, str]]] = {
    "today": lambda today: (today, "exact"),
    "yesterday": lambda today: (today - timedelta(days=1), "exact"),
    "week": lambda today: (today, "estimate"),
    "month": lambda today: (today.replace(day=1), "unknown_day"),
    "unknown": lambda today: (None, "unknown"),
}
URGENCY = {"urgent": "urgent", "soon": "high", "record": "low"}  # HURIDOCS mt46


def labels(ctx: Context) -> dict[str, str]:
    return {key: ctx._(message) for key, message in ANSWERS.items()}


def triage(d: dict[str, Any], *, country: str | None) -> dict[str, Any]:
    """What the server may read (encrypted at rest): the desk's queue sorts by it."""
    return {
        "type_of_act": ACTS[d["act"]],
        "urgency": URGENCY[d["urgency"]],
        "country": country,
        "initial_date": d["date"],
        "initial_date_type": d["date_type"],
    }


def body(d: dict[str, Any], *, language: str) -> dict[str, Any]:
    """What only the desk reads: sealed, with the parts sealed on arrival inside it."""
    return {
        "format": "amparo-report-1",
        "type_of_act": {"code": ACTS[d["act"]], "answer": d["act"]},
        "initial_date": d["date"],
        "initial_date_type": d["date_type"],
        "perpetrator_type": d["perpetrator"],
        "counting_unit": "individual" if d["affected"] == "me" else "group",
        "affected": d["affected"],
        "count": d.get("count"),
        **({"count_withheld": "pin"} if d.get("count_withheld") else {}),  # flows.report
        "consent": d["consent"],
        "priority": URGENCY[d["urgency"]],
        "language": language,
        "parts": d["parts"],  # each sealed on arrival: kind "report.part", this report's id
    }
