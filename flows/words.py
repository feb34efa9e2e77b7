"""Words that work from any state, in every language we speak, compared in ``fold`` form."""

from __future__ import annotations

import re
import unicodedata

from core.text import fold


def _folded(*words: str) -> frozenset[str]:
    return frozenset(fold(w) for w in words)


HELP = _folded(
    "help", "/help", "?", "ayuda", "/ayuda", "aide", "/aide", "ajuda", "/ajuda", "مساعدة"
)
CANCEL = _folded(
    "cancel", "/cancel", "stop", "/stop", "cancelar", "/cancelar", "annuler", "/annuler",
    "parar", "/parar", "إلغاء", "/إلغاء",
)  # fmt: skip
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
    "🆘",
)
# "¡SOS!" (Spanish opens it with "¡"), "S.O.S.", "النجدة!" or "النجدة؟", "SOS, SOS", the
# kashida some keyboards stretch Arabic words with ("النجـــدة"), an emoji's presentation
# selector ("🆘️").
_MARKS = re.compile(r"[\s¡!¿?.,،؟\u0640\ufe0f]")
# The cry repeated: "SOS SOS SOS", "🆘🆘", "نجدة نجدة" (in ``bare`` form).
_CRIES = re.compile(
    "(?:"
    + "|".join(re.escape(w) for w in sorted(ALERT, key=len, reverse=True) if w[0] != "/")
    + ")+"
)
ALERT_CHOICE = "panic"  # the key of the menu button (never shown: labels are innocuous)
SAFE_CHOICE = "safe"  # the key of the reminders' "I'm safe" button (core.notices)
YES = _folded("yes", "y", "si", "sí", "oui", "sim", "نعم", "ok")
NO = _folded("no", "n", "non", "não", "nao", "لا")


_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\u2032", "'"))


def label(text: str) -> str:
    """The form a typed answer and an option's label are compared in: folded, without
    apostrophes (phones type "’", people in a hurry none: "im safe" is the option "I'm safe")
    or the punctuation and quotes around it ("I'm safe.", “I'm safe” as a reminder quotes it)."""
    folded = fold(text).translate(_APOSTROPHES).replace("'", "")
    start, end = 0, len(folded)
    while start < end and _punctuation(folded[start]):
        start += 1
    while end > start and _punctuation(folded[end - 1]):
        end -= 1
    return folded[start:end].strip()


def _punctuation(c: str) -> bool:
    return c.isspace() or unicodedata.category(c).startswith("P")


def bare(folded: str) -> str:
    """A folded message without spaces, dots, commas and exclamation or question marks: the
    form a whole message is compared in to the alert words."""
    return _MARKS.sub("", folded)


def cry(folded: str) -> bool:
    """A whole message that is an alert word, alone or repeated ("SOS SOS", "🆘🆘"); a
    command only alone ("/sos", which ``flows.router_alarms.is_alert`` also takes with words
    after)."""
    said = bare(folded)
    return said in ALERT or _CRIES.fullmatch(said) is not None


def phrase_form(folded: str) -> str:
    """The form a code phrase and a message are compared in: folded, without spaces,
    punctuation (any apostrophe, "?", "¿", "…") or kashida, so that "is the bakery open"
    typed in a hurry is the phrase "Is the bakery open?". A phrase of punctuation alone keeps
    its own form."""
    loose = "".join(
        c
        for c in folded.translate(_APOSTROPHES)
        if not (c.isspace() or c == "\u0640" or unicodedata.category(c).startswith("P"))
    )
    return loose or folded


def same_phrase(typed: str, phrase: str | None) -> bool:
    """A folded message is the defender's (folded) code phrase, punctuation aside; never a
    number (a PIN, an answer) or a word that already means something (as a phrase kept
    before such phrases were refused could make it)."""
    if not typed or not phrase:
        return False
    if typed == phrase:
        return True
    form = phrase_form(typed)
    return form == phrase_form(phrase) and not (form.isdigit() or reserved(typed))


_TAKEN = HELP | CANCEL | MENU | ALERT | YES | NO


def reserved(text: str) -> bool:
    """A phrase that cannot become a code phrase: it already means something."""
    words = fold(text)
    taken = words in _TAKEN or cry(words)
    return taken or words.startswith("/") or phrase_form(words) in _TAKEN_FORMS


_TAKEN_FORMS = frozenset(phrase_form(w) for w in _TAKEN)


def _labelled(*words: str) -> frozenset[str]:
    return frozenset(label(w) for w in words)


# Typed answers to a roll-call (besides its options' own labels, and their numbers where
# options are numbered), taken only while a roll-call is the last thing the defender was
# asked (flows.rollcall): "help" then answers it instead of showing the help (not "/help").
# "I'm safe" typed while an alert is on asks for the PIN that calls it off (flows.panic).
ROLLCALL_SAFE = _labelled(
    "safe", "i'm safe", "i am safe", "seguro", "segura", "estoy bien", "a salvo",
    "en sécurité", "je vais bien", "estou bem", "estou seguro", "estou segura",
    "آمن", "آمنة", "بخير", "أنا بخير",
)  # fmt: skip
ROLLCALL_HELP = _labelled(
    "help", "i need help", "ayuda", "necesito ayuda", "aide", "j'ai besoin d'aide",
    "ajuda", "preciso de ajuda", "مساعدة", "أحتاج مساعدة",
)  # fmt: skip
