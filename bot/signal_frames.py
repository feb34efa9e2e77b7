"""signal-cli's frames, screened before signalbot parses them (bot.signal).

signal-cli writes every file a message points to into its attachment store, not only the
message's own ``attachments``: a link preview's image (``previews[].image``), a quoted
message's thumbnails (``quote.attachments[].thumbnail``), a shared contact's avatar
(``contacts[].avatar.attachment``), a story's file. Each is an attachment object with a
string ``id`` and a ``contentType``. Only a private data message's own attachments are ever
read; every other file is deleted from the store unread (R17).

A message signal-cli could not decrypt because its sender's safety number changed (R6: it
runs ``on-first-use``, so a changed key is untrusted on receipt too) comes as a frame with
``"exception": {"type": "UntrustedIdentityException", "message": …}`` and an envelope that
names the sender but carries no message. signal-cli keeps it in its message cache (up to 30
days) and retries it once the new key is trusted: it then comes as an ordinary message.

A frame signalbot's strict model refuses (an attachment without ``isVoiceNote``, a field of a
newer signal-cli) would make its receiver fail: the message lost, its files never deleted, and
signalbot's traceback, which quotes the frame, on stderr. Each frame is checked against that
model first; one it refuses never reaches signalbot: all its files are deleted unread and it is
handed to ``unparsed``, which passes on what can be read of it (its text); only the error's
class is logged. A frame signalbot takes but fails on before handing it on (a group message
from a group it does not know, when it cannot fetch the list of groups) goes the same way:
signal-cli has let go of it, so it is read from the frame rather than lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from signalbot._generated import Message  # what signalbot's parser validates every frame with

log = logging.getLogger("amparo.signal")

UNTRUSTED = "UntrustedIdentityException"
Discard = Callable[[list[str]], Awaitable[None]]
KeyChanged = Callable[[dict[str, Any]], Awaitable[None]]
Unparsed = Callable[[dict[str, Any]], Awaitable[None]]


def _part(parent: Any, key: str) -> dict[str, Any]:
    found = parent.get(key) if isinstance(parent, dict) else None
    return found if isinstance(found, dict) else {}


def _is_file(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("id"), str) and "contentType" in node


def stored_files(envelope: Any) -> list[str]:
    """The keys of every file signal-cli stored for a frame, wherever in it they sit."""
    found: dict[str, None] = {}
    pending = [envelope]
    while pending:
        node = pending.pop()
        if _is_file(node):
            found[node["id"]] = None
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return list(found)


def readable_files(envelope: Any) -> set[str]:
    """The files the adapter may read: a data message's own attachments (or an edit's), in a
    private chat. A group's are never read: deleted here, before signalbot, which may fail on
    its message (a group it cannot look up) so that it never reaches the adapter."""
    edit = _part(envelope, "editMessage")
    found = set()
    for message in (_part(envelope, "dataMessage"), _part(edit, "dataMessage")):
        if message.get("groupInfo") is not None:
            continue
        metas = message.get("attachments")
        found |= {a["id"] for a in metas if _is_file(a)} if isinstance(metas, list) else set()
    return found


def untrusted(frame: dict[str, Any]) -> bool:
    """signal-cli could not decrypt this message: the sender's safety number changed."""
    exception = frame.get("exception")
    return isinstance(exception, dict) and exception.get("type") == UNTRUSTED


async def screen(
    receive: Callable[[], AsyncIterator[str]],
    number: str,
    discard: Discard,
    key_changed: KeyChanged,
    unparsed: Unparsed,
) -> AsyncIterator[str]:
    """signal-cli's frames as signalbot may see them. Kept from it: the bot's own account's
    (sync transcripts), and a message from a changed key (handed to ``key_changed``). The
    files of a frame kept from signalbot, and the files nobody reads of the others, are
    deleted from signal-cli's store unread (R17). A frame signalbot's model refuses is kept
    from it too, its files deleted, and handed to ``unparsed`` (if it names a sender); so is
    one signalbot's receiver fails on (or is stopped on) once it has it."""
    async for raw in receive():
        try:
            frame = json.loads(raw)
        except ValueError:
            frame = None
        if frame is None:
            yield raw  # not JSON: signalbot's parser skips it
            continue
        envelope = frame.get("envelope") if isinstance(frame, dict) else None
        envelope = envelope if isinstance(envelope, dict) else {}
        files = stored_files(envelope)
        own = "syncMessage" in envelope or envelope.get("sourceNumber") == number
        if own or (isinstance(frame, dict) and untrusted(frame)):
            await discard(files)
            if not own:
                await key_changed(envelope)
            continue
        try:
            Message.model_validate(frame)
        except Exception as exc:  # pydantic's ValidationError: it would stop signalbot
            log.warning("signal frame not understood", extra={"error": type(exc).__name__})
            await discard(files)
            if envelope:
                await unparsed(envelope)
            continue
        readable = readable_files(envelope)
        await discard([key for key in files if key not in readable])
        try:
            yield raw
        except GeneratorExit:
            # signalbot let go of its receiver with this frame in hand: it failed on it (a
            # group it could not look up) or was stopped, and the frame never reached us.
            await discard(list(readable))
            if envelope:
                await unparsed(envelope)
            raise
