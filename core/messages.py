"""What flows say and hear, independent of any channel; and the Channel protocol itself.

Every channel renders an ``Outbound`` (Telegram: inline buttons; Signal and the console:
numbered options) and turns what arrives into an ``Inbound``. Outbound messages travel through
the outbox as JSON (``to_json``/``from_json``), encrypted at rest.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Choice:
    key: str  # stable, language-independent ("yes", "30m", "cancel")
    label: str  # translated text shown to the person


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Outbound:
    text: str
    choices: tuple[Choice, ...] = ()
    request_location: bool = False
    attachments: tuple[Attachment, ...] = ()
    # PIN prompts, report contents: deleted or expired by channels that can (discreet mode).
    sensitive: bool = False
    # Not a message but an instruction: delete these earlier messages of the chat (the
    # defender's PIN, the bot's sensitive replies), where the channel can.
    delete_message_ids: tuple[str, ...] = ()
    # Another instruction: the chat's disappearing-messages timer in seconds (0: off), applied
    # before any text by channels that have one (Signal); None leaves it alone. Others ignore it.
    expiry_s: int | None = None
    # The channel's ids of the parts (text chunks, files) of this message that earlier tries
    # put in the chat before one failed (``DeliveryError.sent``), in order: a channel that
    # sends in parts sends only the rest. Set by core.delivery, never by flows.
    sent_parts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text}
        if self.choices:
            data["choices"] = [[c.key, c.label] for c in self.choices]
        if self.request_location:
            data["request_location"] = True
        if self.attachments:
            data["attachments"] = [
                [a.filename, a.content_type, base64.b64encode(a.data).decode()]
                for a in self.attachments
            ]
        if self.sensitive:
            data["sensitive"] = True
        if self.delete_message_ids:
            data["delete_message_ids"] = list(self.delete_message_ids)
        if self.expiry_s is not None:
            data["expiry_s"] = self.expiry_s
        if self.sent_parts:
            data["sent_parts"] = list(self.sent_parts)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outbound:
        return cls(
            text=data["text"],
            choices=tuple(Choice(k, label) for k, label in data.get("choices", ())),
            request_location=bool(data.get("request_location", False)),
            attachments=tuple(
                Attachment(name, ctype, base64.b64decode(b64))
                for name, ctype, b64 in data.get("attachments", ())
            ),
            sensitive=bool(data.get("sensitive", False)),
            delete_message_ids=tuple(data.get("delete_message_ids", ())),
            expiry_s=None if data.get("expiry_s") is None else int(data["expiry_s"]),
            sent_parts=tuple(str(i) for i in data.get("sent_parts", ())),
        )


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    live: bool = False  # a live location keeps updating while the alert is open
    # A live one: how long after its message was sent it may update, in seconds, as the
    # channel said (Telegram's ``live_period``; 0x7FFFFFFF: until the person stops it).
    live_period: int | None = None
    ended: bool = False  # the last update of a live location: its sharing has stopped


@dataclass(frozen=True)
class InboundAttachment:
    kind: str  # "photo", "document", "voice", "video"
    content_type: str
    size: int
    data: bytes | None = field(default=None, repr=False)  # held in memory, never on disk
    filename: str | None = None


@dataclass(frozen=True)
class Inbound:
    channel: str
    address: str = field(repr=False)  # chat id, Signal UUID…: never logged
    message_id: str  # the channel's own id, for dedupe (update_id; Signal source+timestamp)
    received_at: datetime
    text: str | None = field(default=None, repr=False)
    choice: str | None = None  # the key of a Choice the person picked
    location: Location | None = field(default=None, repr=False)
    attachments: tuple[InboundAttachment, ...] = ()
    language: str | None = None  # the client's language code, if the channel tells
    forwarded: bool = False  # never counts as a check-in (SECURITY.md R3)
    edited: bool = False  # never counts as a check-in (SECURITY.md R3)
    private: bool = True  # only private chats with enrolled people are accepted
    # The chat's own id of this message (Telegram message_id, Signal timestamp), so that a
    # PIN can be deleted from the chat; message_id above is the dedupe key.
    chat_message_id: str | None = None
    # The desk's responder group (private is then False): ``address`` is the group, ``sender``
    # who wrote or pressed; ``callback`` a pressed button's raw token, redeemed by the flows
    # only once the sender is known to be one of the organisation's responders.
    group: bool = False
    sender: str | None = field(default=None, repr=False)
    callback: str | None = field(default=None, repr=False)
    # The group's chat now has this id (Telegram upgraded it to a supergroup): said by the
    # platform itself in a service message, which no member can forge.
    moved_to: str | None = field(default=None, repr=False)
    # Signal: a message its service could not decrypt because the sender's safety number
    # changed (R6). It carries nothing else: the flows alert the desk and answer nothing.
    key_changed: bool = False


@dataclass(frozen=True)
class Address:
    channel: str
    value: str = field(repr=False)


@dataclass(frozen=True)
class Delivered:
    message_id: str | None = None  # the channel's id of what was sent, for later deletion


# ``last_error`` of an outbox row that must not go (its alert closed, its defender deleted).
WITHDRAWN = "withdrawn"


class DeliveryError(Exception):
    """A send failed; ``permanent`` says whether retrying can help. ``sent``: the channel's
    ids of the parts this try put in the chat before failing, in order (one per part, so
    ``len(sent)`` parts): the retry sends only the rest, and discreet mode deletes them."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        sent: tuple[str, ...] = (),
    ) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after
        self.sent = sent


Inbox = Callable[[Inbound], Awaitable[None]]


# A send refused because the person's safety number changed (Signal's "untrusted identity"):
# permanent, and for a defender an alert to the desk (core.delivery, R6).
IDENTITY_CHANGED = "identity changed"


class NotHandled(Exception):
    """The engine could not handle an event, nor even answer it (its fallback failed too):
    the channel must not confirm it, so that it comes again. ``transient``: the database
    was unreachable or locked, so every event fails alike for a while; retry with patience
    (it is no poison event, and it may be a panic)."""

    def __init__(self, *, transient: bool) -> None:
        super().__init__("event not handled")
        self.transient = transient


PATIENCE_S = 600.0  # how long a channel that cannot re-fetch an event keeps retrying it


async def handed(inbox: Inbox, inbound: Inbound, *, patience_s: float = PATIENCE_S) -> None:
    """``inbox(inbound)``, retried with backoff while the failure is transient, for channels
    whose service has already let go of the event (Signal, the console): giving up would
    lose it. Raises NotHandled when it cannot be handled."""
    loop = asyncio.get_running_loop()
    until, wait = loop.time() + patience_s, 0.5
    while True:
        try:
            await inbox(inbound)
            return
        except NotHandled as exc:
            if not exc.transient or loop.time() + wait > until:
                raise
        await asyncio.sleep(wait)
        wait = min(wait * 2, 30.0)


class Channel(Protocol):
    name: ClassVar[str]

    async def run(self, inbox: Inbox) -> None: ...

    async def send(self, to: Address, message: Outbound) -> Delivered: ...
