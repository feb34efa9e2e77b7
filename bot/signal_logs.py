"""What signalbot says of its failures, by class only (SECURITY.md R26; bot.signal).

signalbot reruns its startup and its receiver after any exception, printing the traceback
to stderr first (``_utils/retry.py``: ``traceback.print_exc``, past every logging filter):
an HTTP error's text names the URL, and signal-cli-rest-api's URLs carry the bot's own phone
number (``GET /v1/groups/+49…`` failing, say). Its handlers' failures are logged with their
traceback, and at INFO it logs every raw frame (senders, text). So: its startup and its
receiver are wrapped to log a failure as ours, by class, and never let it reach that print;
its logger passes WARNING and above only, each traceback replaced by its exception's class.

And one failure need not be one at all: signalbot's list of groups (``GET /v1/groups``),
fetched at startup and again for each message from a group it does not know. The channel
never reads that list (a group's id comes in its message), yet a failed fetch stopped
signalbot's startup, retried for up to 300 s, or failed its receiver on the message: each
time the bot was deaf to everyone, and in json-rpc mode what arrives then is lost (R27). A
failed fetch now keeps the list it had, and is logged by class.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from signalbot import SignalBot

log = logging.getLogger("amparo.signal")
# Startup retried after 1 s, 2 s, … as signalbot does, at most this long apart.
START_RETRY_MAX_S = 300.0


class ClassOnly(logging.Filter):
    """On signalbot's logger: nothing below WARNING (its INFO lines carry every raw frame);
    a traceback is dropped, its exception's class kept (``error``, an allowlisted field)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        if record.exc_info:
            if record.exc_info[1] is not None:
                record.error = type(record.exc_info[1]).__name__
            record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def lenient_groups(bot: SignalBot) -> None:
    """A failed fetch of ``bot``'s group list, or of one group, keeps what it had."""
    registry = bot.groups
    refresh, refresh_one = registry.refresh, registry.refresh_one

    async def lenient() -> None:
        try:
            await refresh()
        except Exception as exc:
            log.warning("signal group list not fetched", extra={"error": type(exc).__name__})

    async def lenient_one(group_internal_id: str) -> None:
        try:
            await refresh_one(group_internal_id)
        except Exception as exc:  # a group it never listed (KeyError) included
            log.warning("signal group not fetched", extra={"error": type(exc).__name__})

    registry.refresh = lenient  # type: ignore[method-assign]
    registry.refresh_one = lenient_one  # type: ignore[method-assign]


def quiet(bot: SignalBot) -> None:
    """Keep ``bot``'s failures to their class. Private attributes, renamed at signalbot's
    will: ``test_signalbot_failures_are_logged_by_class_only`` (tests/bot) fails if they go."""
    logger = logging.getLogger("signalbot")
    logger.handlers.clear()  # each SignalBot adds one: lines would be repeated, unfiltered
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, ClassOnly) for f in logger.filters):
        logger.addFilter(ClassOnly())
    pipeline = bot._pipeline
    produce = pipeline._produce
    start = bot._async_post_init

    async def receiver(name: int) -> None:
        # Ended, not raised: bot.signal.Signal.run sees the receiver stopped and starts a
        # new bot at once (the frame it failed on went on already: bot.signal_frames).
        try:
            await produce(name)
        except Exception as exc:
            log.error("signal receiver failed", extra={"error": type(exc).__name__})

    async def startup() -> Any:
        delay = 1.0
        while True:
            try:
                return await start()
            except Exception as exc:
                log.error("signal receiver not started", extra={"error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(START_RETRY_MAX_S, delay * 2)

    pipeline._produce = receiver  # type: ignore[method-assign]
    bot._async_post_init = startup  # type: ignore[method-assign]
