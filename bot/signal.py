"""Signal, through signal-cli-rest-api (json-rpc mode): signalbot 2 receives, we send.

signalbot receives (websocket); what it may see is screened first (bot.signal_frames), what
it cannot take is read from the frame itself (bot.signal_envelopes), and attachments are ours
to fetch: only a defender's, size first (bot.signal_rest). Sending goes straight to
``/v2/send``, because signalbot drops the error body that tells an unregistered recipient
(permanent) or a rate limit (it passes) from a hiccup (bot.signal_render.delivery_error).

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
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import aiohttp
import websockets
from signalbot import Config, DataMessageContext, DataMessageHandler, SignalBot

from bot.signal_envelopes import SignalEnvelopes
from bot.signal_frames import screen
from bot.signal_logs import lenient_groups, quiet
from bot.signal_render import parse_location, render
from bot.signal_rest import DELETE_RETRY_S, Known, SignalRest
from core.messages import (
    Address,
    Delivered,
    DeliveryError,
    Inbound,
    InboundAttachment,
    Inbox,
    NotHandled,
    Outbound,
    handed,
)
from core.proxies import Proxies

log = logging.getLogger("amparo.signal")
Clock = Callable[[], datetime]
DEFAULT_EXPIRY_S = 24 * 3600
# After the receive websocket closed or failed, open it again this soon: every second it is
# closed, signal-cli-rest-api drops what arrives (json-rpc mode, see above).
RECONNECT_S = 1.0


class _Receiver(DataMessageHandler):
    def __init__(self, channel: Signal) -> None:
        self.channel = channel

    async def handle_data_message(self, ctx: DataMessageContext) -> None:
        self.channel.take(ctx)


class Signal(SignalEnvelopes, SignalRest):
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
