"""What people type, made safe to store and to compare.

``clean`` refuses text a flow must not take (control characters, bidi overrides that can make a
report read differently on the desk's screen, lone surrogates, floods of combining marks, more
than 4,000 characters) and drops the invisible marks keyboards insert (LRM/RLM, ALM).
``fold`` is the form words are compared in: commands, code phrases, choice labels. ``digits``
reads any Unicode decimal digit (Arabic-Indic ٠١٢, Persian ۰۱۲, Devanagari…) as ASCII.
``file_name`` cleans the name a file arrives with: what ``clean`` refuses is dropped instead.
"""

from __future__ import annotations

import re
import unicodedata

MAX_TEXT = 4000
MAX_NAME = 255  # a file name, as most file systems allow
# Embeddings, overrides and isolates: they reorder what the desk reads (U+202E and friends).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Marks that keyboards insert on their own; harmless, so silently dropped.
_BIDI_MARKS = frozenset("\u200e\u200f\u061c")
# Invisible in words to compare (ZWNJ/ZWJ stay in free text: Persian and Arabic need them).
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad") | _BIDI_MARKS
_MAX_MARKS = 8  # combining marks on one base character; real scripts need far fewer
# Look-alike letters folded to Latin, so "/weаther" with a Cyrillic "а" still matches.
_CONFUSABLES = str.maketrans(
    {
        **dict(zip("аеорсухіјѕԁԛԝӏ", "aeopcyxijsdqwl", strict=True)),  # Cyrillic
        **dict(zip("οανιρ", "oavip", strict=True)),  # Greek
    }
)


class BadText(ValueError):
    """Text a flow refuses; ``reason`` is one of "control", "too_long", "empty"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def clean(text: str) -> str:
    """NFC text, trimmed, without bidi marks; raises BadText for what must not be stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadText("control") from None
    if len(text) > MAX_TEXT:
        raise BadText("too_long")
    text = "".join(c for c in unicodedata.normalize("NFC", text) if c not in _BIDI_MARKS)
    marks = 0
    for c in text:
        if c in _BIDI_CONTROLS or (unicodedata.category(c) == "Cc" and c not in "\n\t"):
            raise BadText("control")
        marks = marks + 1 if unicodedata.combining(c) else 0
        if marks > _MAX_MARKS:
            raise BadText("control")
    text = text.strip()
    if not text:
        raise BadText("empty")
    return text


def file_name(name: str | None) -> str | None:
    """A sender's file name, safe to seal and to show: NFC, without control characters, bidi
    overrides and marks, lone surrogates, line separators or floods of combining marks (a name
    like "statement\u202egpj.exe" reads "statementexe.jpg"), at most MAX_NAME characters; None
    if nothing is left. Cleaned, never refused: the name comes with evidence, which is kept."""
    if name is None:
        return None
    kept, marks = [], 0
    for c in unicodedata.normalize("NFC", name):
        marks = marks + 1 if unicodedata.combining(c) else 0
        unsafe = unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")
        if unsafe or c in _BIDI_CONTROLS or c in _BIDI_MARKS or marks > _MAX_MARKS:
            continue
        kept.append(c)
    return "".join(kept).strip()[:MAX_NAME] or None


def fold(text: str) -> str:
    """The comparison form: NFKC, no invisibles, no accents, look-alikes folded, casefolded."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if c not in _INVISIBLE and not unicodedata.combining(c))
    text = unicodedata.normalize("NFKC", text).casefold().translate(_CONFUSABLES)
    return " ".join(digits(text).split())


def digits(text: str) -> str:
    """Every Unicode decimal digit as its ASCII digit; other characters unchanged."""
    return "".join(
        str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c for c in text
    )


_PIN = re.compile(r"[0-9]{4,8}")


def pin(text: str) -> str | None:
    """A PIN of 4 to 8 digits in any script (spaces allowed between them), or None."""
    candidate = digits(unicodedata.normalize("NFKC", text))
    candidate = "".join(c for c in candidate if c not in _INVISIBLE and not c.isspace())
    return candidate if _PIN.fullmatch(candidate) else None
