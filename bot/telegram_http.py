"""python-telegram-bot's network layer on aiohttp instead of httpx (PTB's documented extension
point, ``telegram.request.BaseRequest``): PTB still builds every request and maps every error
answer (``RetryAfter``, ``Forbidden``, ``ChatMigrated``…); this only moves the bytes.

Why: in the Telegram pipeline (bench/telegram_pipeline.py), httpx and httpcore took about a
third of the event loop per update: a pool that polls each idle connection's socket before
every request, anyio streams and a generic model layer. aiohttp is already installed (signalbot
uses it). Error texts carry the exception's class only: a URL embeds the bot token.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

DefaultValue: Any = type(BaseRequest.DEFAULT_NONE)


class AiohttpRequest(BaseRequest):
    def __init__(
        self,
        *,
        connections: int = 16,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._connections = connections
        self._read, self._write, self._connect = read_timeout, write_timeout, connect_timeout
        self._pool, self._media_write = pool_timeout, media_write_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers={"User-Agent": self.USER_AGENT},
                skip_auto_headers=("Accept-Encoding",),
                trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as PTB's httpx layer honours them
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("this AiohttpRequest is not initialized")
        files = request_data is not None and request_data.contains_files
        read = self._read if isinstance(read_timeout, DefaultValue) else read_timeout
        write = self._write if not files else self._media_write
        write = write if isinstance(write_timeout, DefaultValue) else write_timeout
        connect = self._connect if isinstance(connect_timeout, DefaultValue) else connect_timeout
        pool = self._pool if isinstance(pool_timeout, DefaultValue) else pool_timeout
        # aiohttp has no write timeout of its own: it bounds the whole exchange instead.
        parts = (read, write, connect, pool)
        total = None if None in parts else sum(p for p in parts if p is not None)
        timeout = aiohttp.ClientTimeout(
            total=total,
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
        try:
            async with self._session.request(
                method, url, data=_body(request_data), timeout=timeout
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}") from None


def _body(request_data: RequestData | None) -> Any:
    """Form-encoded parameters, or multipart when files go up (as PTB's httpx layer does)."""
    if request_data is None:
        return None
    if not request_data.contains_files:
        return request_data.json_parameters or None
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, part in request_data.multipart_data.items():
        filename, content, *rest = part
        form.add_field(name, content, filename=filename, content_type=rest[0] if rest else None)
    return form
