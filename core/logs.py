"""Logging that never carries message text, phone numbers, chat ids or tokens (SECURITY.md R26)."""

from __future__ import annotations

import logging
import re

# Telegram bot tokens, long digit runs (phone numbers, chat ids), and e-mail-like strings.
_PATTERNS = [
    (re.compile(r"bot\d+:[\w-]+"), "bot<redacted>"),
    (re.compile(r"\d+:[A-Za-z0-9_-]{30,}"), "<token>"),
    (re.compile(r"\+\d[\d\s().-]{5,}\d|\d{7,}"), "<number>"),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "<email>"),
]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x1b]")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    # No forged log lines or terminal escapes through a newline or ANSI code.
    return _CONTROL.sub("?", text.replace("\n", "\\n").replace("\r", "\\r"))


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered to text and redacted like the message.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs full URLs at INFO, and Telegram URLs embed the bot token; aiohttp (signalbot's
    # transport) logs none at INFO, but its DEBUG is no place for addresses either.
    quiet = ("httpx", "httpcore", "aiohttp", "telegram", "apscheduler", "signalbot", "websockets")
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
