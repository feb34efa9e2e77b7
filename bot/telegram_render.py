"""Pure helpers of the Telegram channel: long texts, keyboards, files, errors, group events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from telegram import (
    Message,
    Update,
    User,
)
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError

from core import desk_chat
from core.messages import DeliveryError, Inbound, Outbound
from core.text import fold

MAX_TEXT = 4096
CHANNEL = "telegram"
GROUPS = ("group", "supergroup")  # only the desk's responder group is listened to


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Chunks of at most ``limit`` characters, cut at a paragraph, line or word if possible."""
    chunks = []
    while len(text) > limit:
        cut = max(text.rfind(sep, 0, limit) for sep in ("\n\n", "\n", " "))
        cut = cut if cut > limit // 2 else limit
        chunks.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return [*chunks, text] if text or not chunks else chunks


def delivery_error(exc: TelegramError, sent: tuple[str, ...] = ()) -> DeliveryError:
    """The outbox's view of ``exc``; ``sent``: the ids of the parts already in the chat."""
    if isinstance(exc, RetryAfter):
        wait = exc.retry_after
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        return DeliveryError("rate limited", retry_after=seconds, sent=sent)
    if isinstance(exc, Forbidden):  # blocked by the user, deactivated account
        return DeliveryError("forbidden", permanent=True, sent=sent)
    if isinstance(exc, BadRequest) and "chat not found" in exc.message.lower():
        return DeliveryError("chat not found", permanent=True, sent=sent)
    if isinstance(exc, InvalidToken):  # an operator error: retry until it is fixed
        return DeliveryError("invalid token", sent=sent)
    return DeliveryError(type(exc).__name__, sent=sent)


def markup(message: Outbound, tokens: list[str]) -> dict[str, Any]:
    """The keyboard under the message, as the Bot API's JSON: buttons carrying ``tokens``
    (one per choice, in order), a location request, or none (any earlier reply keyboard goes
    away). Plain JSON, not PTB's objects: built for every message sent.

    A message has one keyboard, and only a reply keyboard can ask for a location: a location
    request ("Skip" beside it) is one, its choices plain text buttons that send their label,
    which the flows take as the choice (``Context.need_choice``). It hides once used, and the
    next message without buttons removes it."""
    if message.request_location:
        rows: list[list[dict[str, Any]]] = [[{"text": "📍", "request_location": True}]]
        rows += [[{"text": c.label}] for c in message.choices]
        return {"keyboard": rows, "one_time_keyboard": True, "resize_keyboard": True}
    if message.choices:
        buttons = [
            [{"text": c.label, "callback_data": t}]
            for c, t in zip(message.choices, tokens, strict=True)
        ]
        return {"inline_keyboard": buttons}
    return {"remove_keyboard": True}


def files(message: Message) -> list[tuple[str, str, str, int | None, str | None]]:
    """(kind, file id, MIME type, size if told, file name) of each file the message carries."""
    found: list[tuple[str, str, str, int | None, str | None]] = []
    if message.photo:
        largest = message.photo[-1]
        found.append(("photo", largest.file_id, "image/jpeg", largest.file_size, None))
    for kind in ("document", "voice", "audio", "video"):
        item = getattr(message, kind)
        if item is not None:
            mime = item.mime_type or "application/octet-stream"
            name = getattr(item, "file_name", None)
            found.append((kind, item.file_id, mime, item.file_size, name))
    return found


def from_group(
    update: Update,
    chat_id: int,
    user: User | None,
    now: datetime,
    *,
    text: str | None = None,
    token: str | None = None,
) -> Inbound | None:
    """The desk's responder group: its commands and buttons only (flows.desk)."""
    if user is None or (token is None and not desk_chat.parse(fold(text or ""))):
        return None  # anything else said in a group is never read
    return Inbound(
        channel=CHANNEL,
        address=str(chat_id),
        message_id=str(update.update_id),
        received_at=now,
        text=text,
        language=user.language_code,
        private=False,
        group=True,
        sender=str(user.id),
        callback=token,
    )


def moved(message_id: str, old: int | str, new: int | str, now: datetime) -> Inbound:
    """A group's new chat id (flows.desk moves the responder group's link, and its queue)."""
    return Inbound(
        channel=CHANNEL,
        address=str(old),
        message_id=message_id,
        received_at=now,
        private=False,
        group=True,
        moved_to=str(new),
    )
