"""What the engine says: in the recipient's language, never naming its purpose (R9)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file

from core import notices
from core.i18n import SUPPORTED, translations
from core.models import AlertKind

FORBIDDEN = re.compile(
    r"panic|p[áâa]nico|panique|ذعر|human rights|derechos humanos|droits (humains|de l.homme)"
    r"|direitos humanos|حقوق الإنسان|amparo",
    re.IGNORECASE,
)
SOURCE = Path(notices.__file__)


def messages() -> list[str | tuple[str, str]]:
    return [m for _l, m, _c, _x in extract_from_file("python", str(SOURCE))]  # type: ignore[misc]


@pytest.mark.parametrize("language", SUPPORTED)
def test_it_never_names_the_purpose_in_any_language(language: str) -> None:
    t = translations(language)
    said = []
    for m in messages():
        if isinstance(m, str):
            said.append(t.gettext(m))
        else:
            said += [t.ngettext(m[0], m[1], n) for n in range(0, 12)]
    assert len(said) > 20 and [s for s in said if FORBIDDEN.search(s)] == []


def test_it_speaks_the_recipients_language() -> None:
    texts = {lang: notices.reminder(lang, discreet=False).text for lang in SUPPORTED}
    assert len(set(texts.values())) == len(SUPPORTED)
    assert notices.reminder("es", discreet=False).choices[0].label == "Estoy bien"
    assert notices.pre_reminder("ar", 3, discreet=True).sensitive
    duress = notices.contact_notice("pt", "h-1", duress=True).text
    assert "h-1" in duress and duress != notices.contact_notice("pt", "h-1", duress=False).text
    desk = notices.desk_alert("en", AlertKind.duress, "h-1", repeat=False).text
    assert "Do NOT contact their device" in desk
