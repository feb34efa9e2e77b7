"""What people type: refused when unsafe to store, compared in one folded form."""

from __future__ import annotations

import pytest

from core.text import MAX_NAME, MAX_TEXT, BadText, clean, digits, file_name, fold, pin


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("pay \u202eevil", "control"),
        ("isolate \u2067x\u2069", "control"),
        ("nul \x00 byte", "control"),
        ("bell \x07", "control"),
        ("lone \ud800 surrogate", "control"),
        ("e" + "\u0301" * 20, "control"),
        ("x" * (MAX_TEXT + 1), "too_long"),
        ("  \u200f ", "empty"),
    ],
)
def test_it_refuses_text_that_must_not_be_stored(typed: str, reason: str) -> None:
    with pytest.raises(BadText) as raised:
        clean(typed)
    assert raised.value.reason == reason


def test_it_keeps_real_scripts_and_drops_keyboard_marks() -> None:
    assert clean("  مرحبا\u200f بك \n") == "مرحبا بك"
    assert clean("می\u200cخواهم") == "می\u200cخواهم"  # Persian needs its ZWNJ
    assert clean("Cafe\u0301") == "Café"  # NFC
    assert clean("line one\nline two\ttab") == "line one\nline two\ttab"


def test_it_folds_case_accents_invisibles_and_look_alikes() -> None:
    assert fold("  AYÚDA ") == fold("ayuda") == "ayuda"
    assert fold("/weаther") == "/weather"  # a Cyrillic а
    assert fold("he\u200bl\u200dp") == "help"
    assert fold("ｈｅｌｐ") == "help"  # full-width
    assert fold("Is  the\tbakery open?") == "is the bakery open?"


def test_it_reads_digits_of_any_script() -> None:
    assert digits("٠١٢٣٤٥٦٧٨٩") == "0123456789"
    assert digits("۱۲۳") == "123" and digits("१२३") == "123"
    assert pin("١٢٣٤") == "1234" and pin("۵۶ ۷۸") == "5678" and pin("１２３４") == "1234"
    assert pin("123") is None and pin("123456789") is None and pin("12a4") is None


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("statement\u202egpj.exe", "statementgpj.exe"),  # shown as "statementexe.jpg"
        ("photo\x00.jpg\n", "photo.jpg"),
        ("\u2067isolated\u2069 \u200fname\u2028.pdf", "isolated name.pdf"),
        ("lone \ud800 surrogate.ogg", "lone  surrogate.ogg"),
        ("e" + "\u0301" * 20 + ".png", "é" + "\u0301" * 8 + ".png"),  # NFC, then 8 marks
        ("می\u200cخواهم.jpg", "می\u200cخواهم.jpg"),  # Persian keeps its ZWNJ
        ("x" * 300, "x" * MAX_NAME),
        ("\u202e\x07 ", None),
        (None, None),
    ],
)
def test_file_names_are_cleaned_not_refused(sent: str | None, kept: str | None) -> None:
    assert file_name(sent) == kept
