"""Every user-facing string is in every catalogue: translated, not fuzzy, same placeholders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from core.i18n import LOCALES_DIR, SUPPORTED, translations

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "flows", "bot", "api", "amparo")
PLACEHOLDER = re.compile(r"\{[a-z_]*\}|%\([a-z_]+\)[sd]")
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
METHODS = [("**.py", "python"), ("**/templates/**.html", "jinja2")]  # as pyproject.toml maps


def source_messages() -> set[str | tuple[str, ...]]:
    found: set[str | tuple[str, ...]] = set()
    for package in PACKAGES:
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map=METHODS, keywords=KEYWORDS
        ):
            found.add(message if isinstance(message, str) else tuple(message))
    return found


def catalogue(language: str) -> Catalog:
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f)


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


@pytest.mark.parametrize("language", SUPPORTED)
def test_it_translates_every_message(language: str) -> None:
    cat = catalogue(language)
    wanted = source_messages()
    assert wanted, "no user-facing strings were extracted"
    problems = []
    for message in wanted:
        msgid = message if isinstance(message, str) else message[0]
        entry = cat.get(msgid)
        if entry is None:
            problems.append(f"missing: {msgid!r}")
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy: {msgid!r}")
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if not all(strings):
            problems.append(f"untranslated: {msgid!r}")
        for s in strings:
            if s and placeholders(s) != placeholders(msgid):
                problems.append(f"placeholders differ: {msgid!r}")
    assert problems == []


def test_it_ships_real_translations() -> None:
    # Babel returns the English text silently when a catalogue is missing: check a real one.
    message = "the data directory {path} is not writable"
    assert translations("es").gettext(message) != message
    assert translations("ar").gettext(message) != message


def test_it_keeps_no_obsolete_entries() -> None:
    wanted = {m if isinstance(m, str) else m[0] for m in source_messages()}
    for language in SUPPORTED:
        ids = (m.id if isinstance(m.id, str) else m.id[0] for m in catalogue(language))
        stale = {i for i in ids if i and i not in wanted}
        assert stale == set(), language
