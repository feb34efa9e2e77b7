"""Signal, through signal-cli-rest-api (json-rpc mode): signalbot 2 receives, we send.

signalbot receives (websocket); what it may see is screened first (bot.signal_frames), and
attachments are ours to fetch: only a defender's, size first. Sending goes straight
to ``/v2/send``, because signalbot drops the error body that tells an unregistered recipient
(permanent) or a rate limit (it passes: retried after ``RATE_LIMIT_WAIT_S``) from a hiccup.
signal-cli-rest-api answers any other failure with a 400, signal-cli's network failures
("Failed to send message", "IOException") included: those are retried, never permanent.

Receiving is ours too, below signalbot: ``_frames`` holds the ``/v1/receive`` websocket and
opens it again ``RECONNECT_S`` after any close or error. signalbot's own receiver stops for good
on a clean close and waits longer after each failure (1 s, 2 s, … 300 s, reset only after three
minutes connected); and if its producer fails anyway (a frame it cannot take), ``run`` starts a
new bot at once rather than wait out that backoff. While the socket is not open ``ready`` is
clear and ``inbound_down_s`` counts: /healthz reports Signal's inbound as failing once that
lasts (api.app.INBOUND_DOWN_S).

The remaining risk (R27): in json-rpc mode signal-cli takes each message off Signal's servers
at once and signal-cli-rest-api hands it only to the websockets connected at that moment
(upstream issues #537, #834). A message that arrives while ours is not connected, in the
second before it is open again, or while this process restarts, is lost: neither Signal nor
signal-cli keeps it for us. The full fix is signal-cli-rest-api's normal mode, polled with
``GET /v1/receive`` (signal-cli then leaves messages on Signal's servers until fetched), or a
manual receive mode once upstream offers one in json-rpc mode.

Disappearing messages are a per-chat setting on Signal, kept by signal-cli. The defender picks
the timer in /settings, which reaches us as an instruction (``Outbound.expiry_s``). A chat
whose incoming messages carry no timer (a newcomer sending an invite code, or a chat whose
timer was switched off outside the bot) gets the default, one day, before our next message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import aiohttp
import websockets
from signalbot import Config, DataMessageContext, DataMessageHandler, SignalBot

from bot.signal_frames import screen
from bot.signal_logs import lenient_groups, quiet
from core import desk_chat
from core.media import MAX_BYTES
from core.messages import (
    IDENTITY_CHANGED,
    Address,
    Delivered,
    DeliveryError,
    Inbound,
    InboundAttachment,
    Inbox,
    Location,
    NotHandled,
    Outbound,
    handed,
)
from core.proxies import Proxies
from core.text import fold

log = logging.getLogger("amparo.signal")
Clock = Callable[[], datetime]
Known = Callable[[str], Awaitable[bool]]  # is this Signal address a defender's? (R16, R17)
DEFAULT_EXPIRY_S = 24 * 3600
_PAIR = r"(-?\d{1,2}\.\d+)\s*(?:,|%2C)\s*(-?\d{1,3}\.\d+)"
# Only a message that is a coordinate pair, a geo: URI or a maps link: ordinary text with two
# decimals ("between 10.30, 11.45", "12.50, 3.75 more") is not a place.
_WHOLE = re.compile(rf"\s*{_PAIR}\s*")
_IN_LINK = re.compile(rf"(?:geo:|https?://\S*?[@=/]){_PAIR}", re.IGNORECASE)


_STATUS_429 = re.compile(r"(?<!\d)429(?!\d)")
# Signal's rate limits (an account's sends, a proof-of-work challenge) pass, but
# signal-cli-rest-api's 429 says nothing of when: wait long, never block the address. Longer
# than a P0/P1 notice's patience, so it goes to the person's next address at once if they have
# one (core.delivery); otherwise it is tried here again until core.delivery.given_up.
RATE_LIMIT_WAIT_S = 600.0
# After the receive websocket closed or failed, open it again this soon: every second it is
# closed, signal-cli-rest-api drops what arrives (json-rpc mode, see above).
RECONNECT_S = 1.0
# Files signal-cli's store kept because deleting them failed (R17): tried again after the next
# delete that succeeds and every DELETE_RETRY_S. Bounded: beyond it the oldest is forgotten.
DELETE_RETRY_S = 60.0
UNDELETED_MAX = 1000


def parse_location(text: str | None) -> Location | None:
    """Coordinates typed or pasted as a maps link ("52.52,13.405", geo:…, …/@52.5,13.4,…)."""
    match = _WHOLE.fullmatch(text or "") or _IN_LINK.search(text or "")
    if match is None:
        return None
    lat, lon = float(match.group(1)), float(match.group(2))
    return Location(lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def render(message: Outbound) -> str:
    """Signal has no buttons: choices become numbered options (answered by number or word)."""
    lines = [message.text] if message.text else []
    lines += [f"{i}. {choice.label}" for i, choice in enumerate(message.choices, 1)]
    return "\n".join(lines)


def delivery_error(status: int, body: str) -> DeliveryError:
    text = body.lower()
    if "untrusted identit" in text:  # signal-cli's answer once a safety number changed
        return DeliveryError(IDENTITY_CHANGED, permanent=True)
    if "unregistered" in text or "not registered" in text:
        return DeliveryError("unregistered", permanent=True)
    limited = any(s in text for s in ("rate limit", "ratelimit", "proof required", "captcha"))
    if status == 429 or limited or _STATUS_429.search(text):  # not a 429 inside a number
        return DeliveryError("rate limited", retry_after=RATE_LIMIT_WAIT_S)  # transient
    if status >= 500:
        return DeliveryError(f"signal-cli {status}")
    # Anything else is no verdict on the recipient: signal-cli-rest-api answers every error
    # that is not a rate limit with a 400, a network failure between signal-cli and Signal
    # ("Failed to send message", "IOException") included. Retried as usual, never blocking
    # the address: a reminder or an alert's confirmation is not dropped on a network blip.
    return DeliveryError(f"rejected {status}")


class _Receiver(DataMessageHandler):
    def __init__(self, channel: Signal) -> None:
        self.channel = channel

    async def handle_data_message(self, ctx: DataMessageContext) -> None:
        self.channel.take(ctx)


class Signal:
    name: ClassVar[str] = "signal"

    def __init__(
        self,
        *,
        service: str,
        number: str,
        known: Known,
        expiry_s: int = DEFAULT_EXPIRY_S,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.service = service
        self.number = number
        self.known = known
        self.expiry_s = expiry_s
        self.clock = clock
        self.inbox: Inbox | None = None
        self.ready = asyncio.Event()
        # aiohttp, as for Telegram and webhooks: httpx's pool costs several times the CPU per
        # request at the outbox's concurrency. Opened on first use, in the running loop.
        self._http: aiohttp.ClientSession | None = None
        self._proxy = Proxies()
        self._locks: dict[str, asyncio.Lock] = {}
        self._untimed: set[str] = set()  # chats whose last message carried no timer
        self._handing: set[asyncio.Task[None]] = set()  # messages on their way to the flows
        self._undeleted: dict[str, None] = {}  # attachment ids whose delete failed, in order
        # Since when the receive websocket is not open (None: it is); down until first opened.
        self._down_since: float | None = time.monotonic()

    def inbound_down_s(self) -> float:
        """How long the receive websocket has not been open (0: it is): whatever reaches
        signal-cli meanwhile is dropped, and /healthz says so once it lasts (R27)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def _up(self) -> None:
        self._down_since = None
        self.ready.set()

    def _down(self) -> None:
        self.ready.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()

    # --- inbound ---------------------------------------------------------------------------

    async def run(self, inbox: Inbox) -> None:
        self.inbox = inbox
        while True:
            lost = asyncio.Event()  # this bot's producer let go of the websocket
            bot = self._bot(lost)
            try:
                bot.start(run_forever=False)
                await bot.wait_until_ready()
                retried = time.monotonic()
                while not lost.is_set() and not self._receiver_stopped(bot):
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the wake-up
                    # and drops a stop (SIGTERM) that lands in the same loop turn as ``lost``.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await lost.wait()
                    if self._undeleted and time.monotonic() - retried >= DELETE_RETRY_S:
                        retried = time.monotonic()
                        await self._discard([])
                # Its producer failed (signalbot would retry it after a growing backoff, with
                # nobody listening meanwhile) or ended: a new bot, at once.
                log.warning("signal receiver stopped; restarting it")
            finally:
                self._down()
                await bot._pipeline.stop()
                await bot.close()
            await asyncio.sleep(RECONNECT_S)

    async def _frames(self, messages: Any, lost: asyncio.Event) -> AsyncIterator[str]:
        """signal-cli-rest-api's frames, for signalbot's producer in place of its own
        ``receive``: the websocket is opened again ``RECONNECT_S`` after any close or error,
        so the producer never ends nor waits out signalbot's backoff. ``lost`` is set once the
        producer lets go (it failed on a frame): ``run`` then starts a new bot."""
        uri = messages._uris.receive_ws_uri()  # private: tests/bot/test_signal.py guards them
        try:
            while True:
                try:
                    async with websockets.connect(
                        uri, additional_headers=messages._add_auth(), open_timeout=10
                    ) as socket:
                        self._up()
                        async for raw in socket:
                            yield str(raw)
                    log.warning("signal receive socket closed; reopening")
                except Exception as exc:  # refused, reset, a failed handshake: all the same
                    if self._down_since is None:  # once per outage, not every second
                        error = type(exc).__name__
                        log.warning("signal receive socket failed", extra={"error": error})
                finally:
                    self._down()
                await asyncio.sleep(RECONNECT_S)
        finally:
            lost.set()

    def _bot(self, lost: asyncio.Event) -> SignalBot:
        bot = SignalBot(
            Config(
                phone_number=self.number,
                signal_service=self.service,
                connection_mode="http_only",
                storage={"type": "in-memory"},
                download_attachments=False,  # ours: size first, deleted after (R16, R17)
            )
        )
        # Our own account's other devices (a phone linked to the bot's number) are not
        # defenders: signalbot hands their sync transcripts on with the *recipient* as the
        # sender, so they are dropped here, before it parses them; so is a message from a
        # changed key, which it cannot parse. Private: tests guard it.
        messages = bot._signal.messages
        frames = partial(self._frames, messages, lost)
        screened = partial(
            screen, frames, self.number, self._discard, self._key_changed, self._unparsed
        )
        messages.receive = screened  # type: ignore[method-assign]
        quiet(bot)  # its failures by class only, never its tracebacks or frames (R26)
        lenient_groups(bot)  # its list of groups, which we never read, stops nothing
        bot.register(_Receiver(self), contacts=True, groups=True)
        return bot

    @staticmethod
    def _receiver_stopped(bot: SignalBot) -> bool:
        # A clean websocket close ends signalbot's producer without an error, and it is never
        # restarted (LIBRARIES.md §2.5). Finished tasks leave this set, which is filled before
        # wait_until_ready returns. A private attribute: tests/bot/test_signal.py guards it.
        return not bot._pipeline._produce_tasks

    def take(self, ctx: DataMessageContext) -> None:
        """A message, handled in a task of its own, not in signalbot's handler: ``run``
        stops a bot whose receiver failed, cancelling the handlers it runs and dropping those
        it has queued, and signal-cli has let go of the message already. Tasks start in the
        order they are made: each takes its sender's lock before its first await."""
        task = asyncio.create_task(self._receive(ctx))
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)

    async def _receive(self, ctx: DataMessageContext) -> None:
        try:
            await self.receive(ctx)
        except NotHandled:
            log.error("signal message not handled")
        except Exception as exc:  # logged by class only: its message may quote the frame
            log.error("signal message failed", extra={"error": type(exc).__name__})

    async def receive(self, ctx: DataMessageContext) -> None:
        message = ctx.message
        source = message.source_uuid or message.source_number
        if not source or message.source_number == self.number:
            await self._discard([a.local_filename for a in message.attachments or []])
            return  # our own devices' sync messages are not defenders talking
        if message.is_group():  # only the desk's responder group commands (flows.desk)
            edited = type(message).__name__ == "EditMessage"
            group = getattr(message.group_info, "group_id", None)
            inbound = self._group(group, source, message.timestamp, message.text, edited)
            if inbound is not None:  # its files are deleted already (signal_frames)
                assert self.inbox is not None
                await self.inbox(inbound)
            return
        self._timed(source, message.expires_in_seconds)
        if not (message.text or message.attachments or message.sticker):
            return  # nobody typed it: a timer changed on the phone, a profile key, a session
        # Taken before any await: one sender's messages reach the flows in the order their
        # tasks were made (``take``).
        lock = self._locks.setdefault(source, asyncio.Lock())
        async with lock:
            metas = message.attachments or []
            fetch = bool(metas) and await self._reads_files_of(source)
            attachments = [await self._attachment(a, fetch) for a in metas]
            assert self.inbox is not None
            # signal-cli has let go of it: retried here while the database is down (R27)
            await handed(self.inbox, self._inbound(message, source, tuple(attachments)))

    def _timed(self, source: str, expires_in_s: Any) -> None:
        """Whether the chat's incoming messages carry a disappearing timer (else: the
        default is set before our next message to it)."""
        if expires_in_s:
            self._untimed.discard(source)
        else:
            self._untimed.add(source)

    def _inbound(
        self, message: Any, source: str, attachments: tuple[InboundAttachment, ...]
    ) -> Inbound:
        return Inbound(
            channel=self.name,
            address=source,
            message_id=f"{source}:{message.timestamp}",  # Signal's (sender, timestamp)
            received_at=self.clock(),
            text=message.text,
            location=parse_location(message.text),
            attachments=attachments,
            edited=type(message).__name__ == "EditMessage",
            # None: Signal deletes for everyone only what its sender sent, so the defender's
            # PIN cannot be taken back; their chat's disappearing timer takes it instead.
            chat_message_id=None,
        )

    async def _reads_files_of(self, source: str) -> bool:
        """Only a defender's files are read (a report's evidence): a stranger's are deleted
        unread, as the flows only ask them for an invite code. If the lookup fails (the
        database is down) they are fetched: the flows decide later, and no evidence is lost."""
        try:
            return await self.known(source)
        except Exception as exc:
            log.warning("sender not looked up", extra={"error": type(exc).__name__})
            return True

    async def _attachment(self, meta: Any, fetch: bool) -> InboundAttachment:
        """Fetched only if wanted and its announced size is allowed (R16), read no further
        than the limit, and deleted from signal-cli's store afterwards, read or not (R17). A
        fetch that fails leaves the data out (the flows say so): the text still goes on."""
        size, key = meta.size or 0, meta.local_filename
        data = await self._fetch(key) if fetch and key and size <= MAX_BYTES else None
        await self._discard([key])
        return InboundAttachment(
            kind="voice" if meta.is_voice_note else "document",
            content_type=meta.content_type or "application/octet-stream",
            size=size if data is None else len(data),
            data=data,
            filename=meta.remote_filename,
        )

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

    async def _discard(self, keys: Sequence[str | None]) -> None:
        """Delete files from signal-cli's attachment store (R17): after reading them, or
        unread where nothing is fetched (strangers, groups, the bot's own devices, previews,
        quotes). One that fails is kept and tried again after the next delete that succeeds
        (or the next in ``run``'s watch): a file left in the store is readable by whoever
        takes the server."""
        failed = False
        for key in keys:
            if key:
                failed = not await self._delete(key) or failed
        if failed or not self._undeleted:
            return
        pending, self._undeleted = list(self._undeleted), {}
        for key in pending:
            await self._delete(key)  # kept again if it still fails

    async def _delete(self, key: str) -> bool:
        try:
            await self._call("DELETE", f"/v1/attachments/{key}", {})
        except DeliveryError as exc:
            if str(exc) == "rejected 404":  # not in the store (any more): nothing to retry
                return True
            log.warning("attachment not deleted; kept to retry", extra={"error": str(exc)})
            self._keep(key)
            return False
        return True

    def _keep(self, key: str) -> None:
        self._undeleted[key] = None
        if len(self._undeleted) > UNDELETED_MAX:
            del self._undeleted[next(iter(self._undeleted))]
            log.error("attachment delete given up: too many waiting")

    async def _fetch(self, key: str) -> bytes | None:
        url = f"http://{self.service}/v1/attachments/{key}"
        try:
            async with self._session().get(url, proxy=self._proxy(url)) as response:
                if response.status != 200:
                    log.warning("attachment not fetched", extra={"status": response.status})
                    return None
                data = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > MAX_BYTES:  # larger than announced: never held whole
                        return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("attachment not fetched", extra={"error": type(exc).__name__})
            return None
        return bytes(data)

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

    # --- outbound --------------------------------------------------------------------------

    async def send(self, to: Address, message: Outbound) -> Delivered:
        if message.expiry_s is not None:  # the defender's choice: a failure is retried
            await self._set_expiry(to.value, message.expiry_s)
        elif to.value in self._untimed:  # the default must never hold a message back
            try:
                await self._set_expiry(to.value, self.expiry_s)
            except DeliveryError as exc:
                log.warning("could not set disappearing messages", extra={"error": str(exc)})
        if message.delete_message_ids:
            for stamp in message.delete_message_ids:
                target = {"recipient": to.value, "timestamp": int(stamp)}
                await self._call("DELETE", f"/v1/remote-delete/{self.number}", target)
        if not (message.text or message.attachments or message.choices):
            return Delivered()  # an instruction only (a deletion, a timer)
        body: dict[str, Any] = {
            "number": self.number,
            "recipients": [to.value],
            "message": render(message),
        }
        if message.attachments:
            body["base64_attachments"] = [
                f"data:{a.content_type};filename={a.filename};base64,"
                + base64.b64encode(a.data).decode()
                for a in message.attachments
            ]
        answer = await self._call("POST", "/v2/send", body)
        stamps = [entry.get("timestamp") for entry in answer if isinstance(entry, dict)]
        return Delivered(message_id=str(stamps[-1]) if stamps and stamps[-1] else None)

    async def _set_expiry(self, recipient: str, seconds: int) -> None:
        """The chat's disappearing-messages timer (signal-cli keeps it across restarts)."""
        body = {"recipient": recipient, "expiration_in_seconds": max(0, int(seconds))}
        await self._call("PUT", f"/v1/contacts/{self.number}", body)
        self._untimed.discard(recipient)

    async def close(self) -> None:
        """Close the sending side's connections (the receiver closes its own)."""
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http

    async def _call(self, verb: str, path: str, body: dict[str, Any]) -> Any:
        url = f"http://{self.service}{path}"
        try:
            async with self._session().request(
                verb, url, json=body, proxy=self._proxy(url)
            ) as response:
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(type(exc).__name__) from None
        if status >= 400:
            raise delivery_error(status, text)
        return json.loads(text) if text else None
