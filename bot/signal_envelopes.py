"""Messages read from signal-cli's frame itself, not through signalbot's parser (bot.signal):
a message from a changed key (R6) and a frame signalbot cannot take (both handed here by
``bot.signal_frames.screen``), and a group's desk command (from either). Each goes on to the
flows in a task of its own, one sender's in order; whether a chat's messages carry a
disappearing timer is noted on the way (``_timed``). Held by the Signal channel, which sets
what is declared here.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from bot.signal_render import parse_location
from core import desk_chat
from core.messages import Inbound, InboundAttachment, Inbox, NotHandled, handed
from core.text import fold

log = logging.getLogger("amparo.signal")


class SignalEnvelopes:
    """The Signal channel's reading of raw envelopes, and its handing on of what it read."""

    name: ClassVar[str]
    clock: Callable[[], datetime]
    inbox: Inbox | None
    _locks: dict[str, asyncio.Lock]
    _untimed: set[str]  # chats whose last message carried no timer
    _handing: set[asyncio.Task[None]]  # messages on their way to the flows

    def _timed(self, source: str, expires_in_s: Any) -> None:
        """Whether the chat's incoming messages carry a disappearing timer (else: the
        default is set before our next message to it)."""
        if expires_in_s:
            self._untimed.discard(source)
        else:
            self._untimed.add(source)

    async def _key_changed(self, envelope: dict[str, Any]) -> None:
        """R6 on receipt: signal-cli could not decrypt a message, its sender's safety number
        having changed. Nothing of it can be read; the flows alert the desk at once. Handed
        on in a task of its own: signalbot's receiver must never wait for the database, or
        signal-cli-rest-api drops the frames it cannot write meanwhile."""
        source = envelope.get("sourceUuid") or envelope.get("sourceNumber")
        stamp = envelope.get("timestamp")
        if not isinstance(source, str) or not source or stamp is None:
            return
        inbound = Inbound(
            channel=self.name,
            address=source,
            # Not the (sender, timestamp) of the message itself: signal-cli offers it again,
            # decrypted, once the new key is trusted, and it must not pass for a replay then.
            message_id=f"{source}:{stamp}:untrusted",
            received_at=self.clock(),
            key_changed=True,
        )
        self._hand_on(source, inbound)

    async def _unparsed(self, envelope: dict[str, Any]) -> None:
        """A frame signalbot cannot take, or failed on (bot.signal_frames): its files are
        deleted already; its text, if any, goes on, with the files it carried named but empty
        (the flows say they did not arrive). A group's goes on if it is a desk command. An
        edit goes on as one: never a check-in (R3), and answered as any edit is."""
        source = envelope.get("sourceUuid") or envelope.get("sourceNumber")
        stamp = envelope.get("timestamp")
        data, edited = envelope.get("dataMessage"), False
        if data is None and isinstance(envelope.get("editMessage"), dict):
            data, edited = envelope["editMessage"].get("dataMessage"), True
        if not isinstance(source, str) or not source or stamp is None:
            return
        if not isinstance(data, dict):
            return
        if data.get("groupInfo") is not None:
            info, text = data["groupInfo"], data.get("message")
            group = info.get("groupId") if isinstance(info, dict) else None
            found = self._group(group, source, stamp, text, edited)
            if found is not None:
                self._hand_on(found.address, found)
            return
        self._timed(source, data.get("expiresInSeconds"))
        text = data.get("message") if isinstance(data.get("message"), str) else None
        metas = data.get("attachments")
        metas = metas if isinstance(metas, list) else []
        files = tuple(
            InboundAttachment(
                kind="document",
                content_type=str(meta.get("contentType") or "application/octet-stream"),
                size=meta["size"] if isinstance(meta.get("size"), int) else 0,
                data=None,
            )
            for meta in metas
            if isinstance(meta, dict)
        )
        if not text and not files:
            return
        inbound = Inbound(
            channel=self.name,
            address=source,
            message_id=f"{source}:{stamp}",  # as if parsed: a replay is still a replay
            received_at=self.clock(),
            text=text,
            location=parse_location(text),
            attachments=files,
            edited=edited,
        )
        self._hand_on(source, inbound)

    def _hand_on(self, source: str, inbound: Inbound) -> None:
        task = asyncio.create_task(self._hand(source, inbound))
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)

    async def _hand(self, source: str, inbound: Inbound) -> None:
        async with self._locks.setdefault(source, asyncio.Lock()):
            assert self.inbox is not None
            try:
                await handed(self.inbox, inbound)
            except NotHandled:  # a changed key's alert then waits for a send to be refused
                log.error("signal message not handled")

    def _group(
        self, group: Any, source: str, stamp: Any, text: Any, edited: bool
    ) -> Inbound | None:
        """A desk command said in group ``group`` (its internal id), else None: anything
        else said in a group is never read."""
        if not isinstance(group, str) or not group or not isinstance(text, str):
            return None
        if desk_chat.parse(fold(text)) is None:
            return None
        return Inbound(
            channel=self.name,
            address="group." + base64.b64encode(group.encode()).decode(),  # as /v2/send wants
            message_id=f"{source}:{stamp}",
            received_at=self.clock(),
            text=text,
            edited=edited,
            private=False,
            group=True,
            sender=source,
        )
