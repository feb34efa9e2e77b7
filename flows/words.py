"""Words that work from any state, in every language we speak, compared in ``fold`` form."""

from __future__ import annotations

import re

from core.text import fold


def _folded(*words: str) -> frozenset[str]:
    return frozenset(fold(w) for w in words)


HELP = _folded(
    "help", "/help", "?", "ayuda", "/ayuda", "aide", "/aide", "ajuda", "/ajuda", "مساعدة"
)
CANCEL = _folded(
    "cancel", "/cancel", "stop", "/stop", "cancelar", "annuler", "/annuler", "parar", "إلغاء"
)
MENU = _folded("menu", "/menu", "/start", "menú", "início", "inicio", "القائمة")
# Typed commands for an alert; the defender's own innocuous code phrase works the same way.
# A bare "SOS" too, and "panic" as a command in each language: someone in danger types what
# comes first, and a reply of "I didn't understand" costs the time they do not have. In
# Arabic, the cry for rescue ("النجدة!", "نجدة"): not "مساعدة", which is HELP's word.
ALERT = _folded(
    "/panic",
    "/sos",
    "sos",
    "/alert",
    "/alerta",
    "/alerte",
    "/pánico",
    "/panique",
    "/pânico",
    "نجدة",
    "النجدة",
    "/نجدة",
)
# "¡SOS!" (Spanish opens it with "¡"), "S.O.S.", "النجدة!" or "النجدة؟", and the kashida
# some keyboards stretch Arabic words with ("النجـــدة").
_MARKS = re.compile(r"[\s¡!¿?.؟\u0640]")
ALERT_CHOICE = "panic"  # the key of the menu button (never shown: labels are innocuous)
SAFE_CHOICE = "safe"  # the key of the reminders' "I'm safe" button (core.notices)
YES = _folded("yes", "y", "si", "sí", "oui", "sim", "نعم", "ok")
NO = _folded("no", "n", "non", "não", "nao", "لا")


_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\u2032", "'"))


def label(text: str) -> str:
    """The form a typed answer and an option's label are compared in: folded, and any
    apostrophe as "'" (phones type "’": "I’m safe" is the option "I'm safe")."""
    return fold(text).translate(_APOSTROPHES)


def bare(folded: str) -> str:
    """A folded message without spaces, dots and exclamation or question marks: the form a
    whole message is compared in to the alert words."""
    return _MARKS.sub("", folded)


def reserved(text: str) -> bool:
    """A phrase that cannot become a code phrase: it already means something."""
    words = fold(text)
    taken = words in HELP | CANCEL | MENU | ALERT | YES | NO or bare(words) in ALERT
    return taken or words.startswith("/")


def _labelled(*words: str) -> frozenset[str]:
    return frozenset(label(w) for w in words)


# Typed answers to a roll-call (besides its options' own labels, and their numbers where
# options are numbered), taken only while a roll-call is the last thing the defender was
# asked (flows.rollcall): "help" then answers it instead of showing the help (not "/help").
ROLLCALL_SAFE = _labelled(
    "safe", "i'm safe", "i am safe", "seguro", "segura", "estoy bien", "a salvo",
    "en sécurité", "je vais bien", "estou bem", "estou seguro", "estou segura",
    "آمن", "آمنة", "بخير", "أنا بخير",
)  # fmt: skip
ROLLCALL_HELP = _labelled(
    "help", "i need help", "ayuda", "necesito ayuda", "aide", "j'ai besoin d'aide",
    "ajuda", "preciso de ajuda", "مساعدة", "أحتاج مساعدة",
)  # fmt: skip
