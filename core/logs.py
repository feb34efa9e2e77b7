"""Logging that never carries message text, phone numbers, chat ids or tokens (SECURITY.md R26)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

# Telegram bot tokens, long digit runs (phone numbers, chat ids), numbers written in groups
# ("0171 234 5678", "(555) 123-4567"), UUIDs (Signal's user ids) and e-mail-like strings.
_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"bot\d+:[\w-]+"), "bot<redacted>"),
    (re.compile(r"\d+:[A-Za-z0-9_-]{30,}"), "<token>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"\+\d[\d\s().-]{5,}\d|\d{7,}"), "<number>"),
    # Groups of digits split by spaces, hyphens or brackets, 7 digits or more in all (not
    # dots: "127.0.0.1:8000" stays readable; nor an ISO date, "2026-12-05 19:53").
    (re.compile(r"\(?\d{1,5}\)?(?:[ -]\(?\d{1,5}\)?){1,5}"), lambda m: _grouped(m[0])),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "<email>"),
]
_DATE = re.compile(r"\d{4}-\d\d-\d\d(?: \d\d)?")


def _grouped(found: str) -> str:
    if _DATE.fullmatch(found) or sum(c.isdigit() for c in found) < 7:
        return found
    return "<number>"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x1b]")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    # No forged log lines or terminal escapes through a newline or ANSI code.
    return _CONTROL.sub("?", text.replace("\n", "\\n").replace("\r", "\\r"))


# The ``extra`` fields a line may carry (R26: an allowlist): classes of errors, ids of our
# own rows, counts. Anything else passed as ``extra`` is never written.
FIELDS = (
    "error", "channel", "channels", "outcome", "status", "method", "update", "outbox", "rows",
    "count", "owner", "port", "workers",
)  # fmt: skip


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # a second handler: already done
            return True
        record.redacted = True
        shown = [f"{k}={getattr(record, k)}" for k in FIELDS if hasattr(record, k)]
        record.msg = redact(" ".join([record.getMessage(), *shown]))
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered to text and redacted like the message.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


# The loggers whose lines we write and redact ourselves; every other one is a library's.
OWN = ("amparo", "flows", "core", "bot", "api")
# Libraries known to log what must stay out (R26), set to their floor at the source too:
# httpx logs full URLs at INFO, and Telegram URLs embed the bot token; aiohttp (signalbot's
# transport) and websockets log frames at DEBUG; PIL logs every EXIF tag of evidence at DEBUG
# (an owner's name, a camera's serial number); aiosqlite logs each call with its parameters.
QUIET = (
    "httpx",
    "httpcore",
    "aiohttp",
    "telegram",
    "apscheduler",
    "signalbot",
    "websockets",
    "PIL",
    "aiosqlite",
    "asyncio",
    "multipart",
    "python_multipart",
    "uvicorn",
)


# One exception: uvicorn's server lifecycle ("Application startup complete", "Finished server
# process"), which carries no request (the access log is off), stays at INFO.
LIFECYCLE = "uvicorn.error"


class LibraryFloor(logging.Filter):
    """A library's records pass at WARNING or above, whatever level the operator chose: its
    DEBUG and INFO lines carry URLs, payloads and metadata nobody has allowlisted (R26)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.floor = max(logging.WARNING, level)
        self.lifecycle = max(logging.INFO, level)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" or record.name.split(".", 1)[0] in OWN:
            return True
        if record.name == LIFECYCLE:
            return record.levelno >= self.lifecycle
        return record.levelno >= self.floor


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.setLevel(level)
    floor = LibraryFloor(root.getEffectiveLevel())
    handler.addFilter(floor)
    handler.addFilter(RedactingFilter())
    root.handlers[:] = [handler]
    for name in QUIET:
        logging.getLogger(name).setLevel(floor.floor)
    logging.getLogger(LIFECYCLE).setLevel(floor.lifecycle)
    # uvicorn's own logging config (any uvicorn.Config built without log_config=None) gives
    # its loggers handlers of their own that stop at them: every line must pass ours (R26).
    for name in ("uvicorn", LIFECYCLE, "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
