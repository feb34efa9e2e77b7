"""signal-cli-rest-api over HTTP, ours rather than signalbot's (bot.signal): the calls
(``_call``, errors read by ``bot.signal_render.delivery_error``) and its attachment store.

signal-cli writes every file a message carries into that store. Only a defender's are read, size
first and no further than the limit (R16); every file is deleted afterwards, read or not (R17),
and one whose delete failed is kept and tried again (``_discard``; ``Signal.run`` every
``DELETE_RETRY_S``). Held by the Signal channel, which sets what is declared here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from bot.signal_render import delivery_error
from core.media import MAX_BYTES
from core.messages import DeliveryError, InboundAttachment
from core.proxies import Proxies

log = logging.getLogger("amparo.signal")
Known = Callable[[str], Awaitable[bool]]  # is this Signal address a defender's? (R16, R17)
# Files signal-cli's store kept because deleting them failed (R17): tried again after the next
# delete that succeeds and every DELETE_RETRY_S. Bounded: beyond it the oldest is forgotten.
DELETE_RETRY_S = 60.0
UNDELETED_MAX = 1000


class SignalRest:
    """The Signal channel's HTTP side: its calls to signal-cli-rest-api and the files in
    signal-cli's store."""

    service: str
    known: Known
    _http: aiohttp.ClientSession | None
    _proxy: Proxies
    _undeleted: dict[str, None]  # attachment ids whose delete failed, in order

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
