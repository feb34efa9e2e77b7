"""Translations (Babel): one catalogue per language under ``locales/``, compiled on demand."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DOMAIN = "messages"
SUPPORTED = ("en", "es", "fr", "pt", "ar")
DEFAULT = "en"
RTL = frozenset({"ar"})


def compile_catalogues(directory: Path = LOCALES_DIR, *, force: bool = False) -> list[Path]:
    """Build each .mo that is missing or older than its .po (the .mo files are not committed)."""
    built = []
    for po in sorted(directory.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        mo = po.with_suffix(".mo")
        if force or not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            with po.open("rb") as f:
                catalog = read_po(f)
            tmp = mo.with_name(f".{mo.name}.{os.getpid()}")
            with tmp.open("wb") as f:
                write_mo(f, catalog)
            tmp.replace(mo)
            built.append(mo)
    return built


@cache
def translations(locale: str) -> NullTranslations:
    compile_catalogues()
    return Translations.load(str(LOCALES_DIR), [locale], DOMAIN)


def negotiate(preferred: Iterable[str | None]) -> str:
    """The first supported language among ``preferred`` (``"pt-BR"``, ``"es_MX.UTF-8"``…)."""
    for code in preferred:
        if not code:
            continue
        code = code.split(".")[0].split("@")[0].replace("_", "-")
        try:
            language = Locale.parse(code, sep="-").language
        except (ValueError, UnknownLocaleError):
            continue
        if language in SUPPORTED:
            return language
    return DEFAULT


def gettext(locale: str) -> Callable[[str], str]:
    return translations(locale).gettext


def ngettext(locale: str) -> Callable[[str, str, int], str]:
    return translations(locale).ngettext


def environment_locale() -> str:
    """The operator's language for the command line, from the usual variables."""
    env = os.environ
    return negotiate([env.get("LC_ALL"), env.get("LC_MESSAGES"), env.get("LANG")])


def operator_gettext(message: str) -> str:
    """Translate a message for the operator at the terminal (resolved when called)."""
    return translations(environment_locale()).gettext(message)


def operator_ngettext(singular: str, plural: str, n: int) -> str:
    return translations(environment_locale()).ngettext(singular, plural, n)
