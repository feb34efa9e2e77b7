"""The terminal as a channel: play a defender (or a trusted contact) with ``amparo chat``.

Each line typed is one message. Choices are numbered, as on Signal: answer with the number or
the option's words. A few commands stand in for what a phone would send:

    /location 4.61,-74.08   a location        /file PATH      a file (photo, document…)
    /forward TEXT           a forwarded text  /edit TEXT      an edit of an earlier message
"""

from __future__ import annotations

import asyncio
import mimetypes
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, TextIO

from core.messages import (
    Address,
    Choice,
    Delivered,
    Inbound,
    InboundAttachment,
    Inbox,
    Location,
    Outbound,
    handed,
)

MAX_FILE = 20 * 1024 * 1024


class Console:
    name: ClassVar[str] = "console"

    def __init__(
        self,
        *,
        address: str = "me",
        language: str | None = None,
        read: Callable[[], str] = sys.stdin.readline,
        out: TextIO = sys.stdout,
        after: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.address, self.language, self.read, self.out = address, language, read, out
        self.after = after  # awaited after each message (amparo chat delivers replies there)
        self._choices: tuple[Choice, ...] = ()
        self._sent = 0

    async def run(self, inbox: Inbox) -> None:
        """Read lines until end of input; each one goes to ``inbox``."""
        while line := await asyncio.to_thread(self.read):
            inbound = self.parse(line.rstrip("\n"))
            if inbound is None:
                continue
            await handed(inbox, inbound)
            if self.after is not None:
                await self.after()

    def parse(self, line: str) -> Inbound | None:
        if not line.strip():
            return None
        self._sent += 1
        fields: dict[str, object] = {"text": line}
        command, _, rest = line.partition(" ")
        if command == "/location":
            try:
                lat, lon = (float(x) for x in rest.split(","))
            except ValueError:
                self.print("(usage: /location LATITUDE,LONGITUDE)")
                return None
            fields = {"location": Location(lat, lon)}
        elif command == "/file":
            attachment = self._file(Path(rest.strip()).expanduser())
            if attachment is None:
                return None
            fields = {"attachments": (attachment,)}
        elif command in ("/forward", "/edit"):
            fields = {
                "text": rest,
                "forwarded": command == "/forward",
                "edited": command == "/edit",
            }
        elif line.strip().isdecimal() and 1 <= int(line) <= len(self._choices):
            fields = {"choice": self._choices[int(line) - 1].key}
        return Inbound(
            channel=self.name,
            address=self.address,
            message_id=uuid.uuid4().hex,
            received_at=datetime.now(UTC),
            language=self.language,
            chat_message_id=str(self._sent),
            **fields,  # type: ignore[arg-type]
        )

    def _file(self, path: Path) -> InboundAttachment | None:
        try:
            size = path.stat().st_size
            data = path.read_bytes() if size <= MAX_FILE else None
        except OSError:
            self.print(f"(cannot read {path})")
            return None
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return InboundAttachment(
            kind="photo" if kind.startswith("image/") else "document",
            content_type=kind,
            size=size,
            data=data,
            filename=path.name,
        )

    async def send(self, to: Address, message: Outbound) -> Delivered:
        mine = to.value == self.address
        lead = "bot:" if mine else f"bot → {to.value}:"
        for ids in message.delete_message_ids:
            self.print(f"(message #{ids} deleted)")
        if message.text:
            self.print(f"{lead} {message.text}")
        for n, choice in enumerate(message.choices, 1):
            self.print(f"  {n}. {choice.label}")
        if message.request_location:
            self.print("  (to share a location: /location LATITUDE,LONGITUDE)")
        if mine:
            self._choices = message.choices
        return Delivered(message_id=uuid.uuid4().hex)

    def print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
