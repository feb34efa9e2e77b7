"""Numbers written in words, as people type a timer ("thirty minutes", "dos horas", "une
demi-heure", "ساعتين"): turned into digits for ``flows.when`` to read. Only the numbers a
timer is given in (one to twelve, fifteen, twenty, thirty, forty-five, sixty, a half), in
our languages, as ``core.text.fold`` writes them (no accents, no hamza, lower case).
"""

from __future__ import annotations

import re

from core.text import fold

_NUMBERS: dict[int, tuple[str, ...]] = {
    1: ("one", "a", "an", "uno", "una", "un", "une", "um", "uma", "واحد", "واحدة", "واحده"),
    2: ("two", "dos", "deux", "dois", "duas", "اثنين", "اثنان", "اثنتين", "اثنتان"),
    3: ("three", "tres", "trois", "três", "ثلاث", "ثلاثة", "ثلاثه"),
    4: ("four", "cuatro", "quatre", "quatro", "أربع", "أربعة", "أربعه"),
    5: ("five", "cinco", "cinq", "خمس", "خمسة", "خمسه"),
    6: ("six", "seis", "ست", "ستة", "سته"),
    7: ("seven", "siete", "sept", "sete", "سبع", "سبعة", "سبعه"),
    8: ("eight", "ocho", "huit", "oito", "ثمان", "ثماني", "ثمانية", "ثمانيه"),
    9: ("nine", "nueve", "neuf", "nove", "تسع", "تسعة", "تسعه"),
    10: ("ten", "diez", "dix", "dez", "عشر", "عشرة", "عشره"),
    11: ("eleven", "once", "onze", "أحد عشر", "إحدى عشرة", "احدى عشره"),
    12: ("twelve", "doce", "douze", "doze", "اثني عشر", "اثنا عشر", "اثنتي عشرة", "اثنتا عشرة"),
    15: ("fifteen", "quince", "quinze", "خمس عشرة", "خمسة عشر", "خمس عشره"),
    20: ("twenty", "veinte", "vingt", "vinte", "عشرين", "عشرون"),
    30: ("thirty", "treinta", "trente", "trinta", "ثلاثين", "ثلاثون"),
    45: (
        "forty-five", "forty five", "cuarenta y cinco", "quarante-cinq", "quarante cinq",
        "quarenta e cinco", "خمس وأربعين", "خمسة وأربعين", "خمس وأربعون", "خمسة وأربعون",
    ),
    60: ("sixty", "sesenta", "soixante", "sessenta", "ستين", "ستون"),
}  # fmt: skip
# Whole phrases: half an hour, and Arabic's dual ("two hours" is one word).
_PHRASES = {
    "30 min": (
        "half an hour", "half hour", "media hora", "une demi-heure", "une demi heure",
        "demi-heure", "meia hora", "نصف ساعة", "نصف ساعه",
    ),
    "2 h": ("ساعتين", "ساعتان"),
    "2 min": ("دقيقتين", "دقيقتان"),
}  # fmt: skip
_WORDS = {fold(w): str(n) for n, words in _NUMBERS.items() for w in words}
_WORDS |= {fold(w): digits for digits, phrases in _PHRASES.items() for w in phrases}
_ANY = re.compile(
    r"(?<!\w)("
    + "|".join(re.escape(w) for w in sorted(_WORDS, key=len, reverse=True))
    + r")(?!\w)"
)


def as_digits(folded: str) -> str:
    """``folded`` (``core.text.fold`` output) with its numbers in words as digits."""
    return _ANY.sub(lambda m: _WORDS[m.group(1)], folded)
