"""python-telegram-bot's HTTP transport on aiohttp instead of httpx.

PTB carries its calls through any ``telegram.request.BaseRequest``. Its default,
``HTTPXRequest``, spends most of a ``sendMessage``'s CPU in httpcore's pool: every request that
is added or finishes re-checks every pooled connection (a ``poll`` and a ``getpeername`` each)
against every queued request, so the outbox's concurrent sends cost about three times a lone
send (bench/telegram_pipeline.py). aiohttp is already installed (signalbot's transport), and its
pool hands a free connection over in constant time.

Errors keep PTB's meaning: a timeout is ``TimedOut`` and any other failure of the connection is
``NetworkError``, and the outbox retries both. The status and body go back to PTB, which raises
``Forbidden``, ``RetryAfter`` and the rest itself. Proxies set in the environment
(``HTTPS_PROXY``) are used, as httpx did, read once per URL's origin (``core.proxies``).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from telegram import Bot
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from core.proxies import Proxies

# PTB's own defaults for HTTPXRequest, except the wait for a free connection: the outbox sends
# a batch at once, and a message that waits its turn is better than one that fails for it.
READ_S, CONNECT_S, POOL_S = 5.0, 5.0, 10.0


class AiohttpRequest(BaseRequest):
    """Up to ``connections`` requests at once; more wait for a free connection."""

    def __init__(self, connections: int = 1, read_timeout: float | None = READ_S) -> None:
        self._connections = connections
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxy = Proxies()

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: float | None | object = BaseRequest.DEFAULT_NONE,
        write_timeout: float | None | object = BaseRequest.DEFAULT_NONE,
        connect_timeout: float | None | object = BaseRequest.DEFAULT_NONE,
        pool_timeout: float | None | object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            # Opened on first use: `amparo worker` sends with a Bot it never initialises (no
            # getMe; the inbound side, which does, runs in `amparo serve`), as httpx allowed.
            await self.initialize()
        assert self._session is not None
        read = _given(read_timeout, self._read_timeout)
        connect = _given(connect_timeout, CONNECT_S)
        pool = _given(pool_timeout, POOL_S)
        timeout = aiohttp.ClientTimeout(
            # aiohttp's ``connect`` is the wait for a pooled connection plus the connecting.
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        try:
            async with self._session.request(
                method, url, data=_body(request_data), timeout=timeout, proxy=self._proxy(url)
            ) as response:
                return response.status, await response.read()
        # The URL holds the token, and aiohttp's errors may quote it: only the error's class
        # is said, and the original is not chained (SECURITY.md R12).
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise TimedOut(f"timed out ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}") from None


def _given(value: float | None | object, default: float | None) -> float | None:
    """A timeout the call passed (``None`` included: no limit), or the default."""
    if value is BaseRequest.DEFAULT_NONE:
        return default
    assert value is None or isinstance(value, int | float)
    return value


def _body(request_data: RequestData | None) -> aiohttp.FormData | dict[str, str] | None:
    """Form-encoded parameters, or multipart when a file goes with them (as PTB sends them)."""
    if request_data is None:
        return None
    files = request_data.multipart_data
    if not files:
        return request_data.json_parameters
    form = aiohttp.FormData(quote_fields=False)
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in files.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form


class SendingBot(Bot):
    """PTB's ``Bot`` with a ``sendMessage`` whose answer is read for its message id alone.
    ``Bot.send_message`` parses the whole sent ``Message`` back (its keyboard's objects
    included) and takes PTB's keyboard objects: for the outbox's every reply that was about a
    quarter of the CPU an update cost (bench/telegram_pipeline.py: 13.5 -> 10.2 ms). The call
    goes through ``_post``, the hook PTB's own ``ExtBot`` overrides: defaults, the request and
    PTB's errors (``Forbidden``, ``RetryAfter``...) are as ``send_message``'s.
    (``do_api_request("sendMessage")`` would do the same but warns: the method exists.)"""

    async def send_text(
        self, chat_id: str | int, text: str, reply_markup: dict[str, Any] | None = None
    ) -> int:
        """Send ``text`` (never a parse mode: user text must not break delivery) with the
        keyboard as the Bot API's JSON; the message id."""
        fields: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if reply_markup is not None:
            fields["reply_markup"] = reply_markup
        sent = await self._post("sendMessage", fields)
        return int(sent["message_id"])
