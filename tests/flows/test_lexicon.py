"""R9: nothing the bot says on a defender's phone names its purpose or who runs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir, extract_from_file
from babel.messages.pofile import read_po

from core.i18n import LOCALES_DIR, SUPPORTED

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = re.compile(
    r"panic|p[áâa]nico|panique|ذعر|human rights|derechos humanos|droits (humains|de l.homme)"
    r"|direitos humanos|حقوق الإنسان|amparo|\{org",
    re.IGNORECASE,
)


# What core itself writes to a defender's phone (core/notices.py has its own scan).
CORE_SAYS = ("broadcast_chunks.py", "rollcalls.py")


def flow_messages() -> set[str]:
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    found = set()
    for package in ("flows", "bot"):
        for _f, _l, message, _c, _x in extract_from_dir(ROOT / package, keywords=keywords):
            found.add(message if isinstance(message, str) else message[0])
    for name in CORE_SAYS:
        for _l, message, _c, _x in extract_from_file(
            "python", str(ROOT / "core" / name), keywords=keywords
        ):
            found.add(message if isinstance(message, str) else message[0])
    assert {"Message from your protection desk:", "I need help"} <= found
    return found


@pytest.mark.parametrize("language", SUPPORTED)
def test_it_never_names_the_purpose_or_the_organisation(language: str) -> None:
    wanted = flow_messages()
    assert len(wanted) > 100
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f)
    said = []
    for message in catalog:
        key = message.id if isinstance(message.id, str) else message.id[0]
        if key in wanted:
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            said += [key, *strings]
    assert said and [s for s in said if FORBIDDEN.search(s)] == []


def test_it_would_notice_a_forbidden_word() -> None:
    assert FORBIDDEN.search("Envoyez un message de PANIQUE")
    assert FORBIDDEN.search("رسالة ذعر")
    assert not FORBIDDEN.search("Alert my contacts now")
