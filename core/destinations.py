"""Where an organisation's webhook may point: public addresses only, in production.

A webhook URL is set by an organisation's admin, and the engine POSTs to it from inside the
deployment: pointed at 127.0.0.1, 169.254.169.254, the signal-cli daemon or another private
address, it would make the engine reach what only the deployment should, and its delivery log
would tell open ports from closed ones. So a URL naming (or resolving to) a loopback, private,
link-local, shared or reserved address is refused when it is added (``check``), and the
engine's client resolves names to public addresses only (``PublicOnly``), so a name that
resolves differently later (DNS rebinding) is refused at connect time too. Two ways around that
resolver are closed before each request (``PublicConnector.admit``): aiohttp connects to an IP
literal without asking it, and through a proxy (``HTTPS_PROXY``, ``ALL_PROXY``) it is the proxy
that resolves the name. Hosts the operator configured (the heartbeat URL's, the proxies') are
exempt. ``AMPARO_WEBHOOK_ALLOW_PRIVATE`` allows private addresses (a desk system on the same
network); development mode allows them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult


class PrivateDestination(ValueError):
    """The URL names, or resolves to, an address that is not public."""


def public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone names a link
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def literal(host: str) -> str | None:
    """The address ``host`` names by itself, or None for a name. Read as the C resolver (and a
    proxy) reads it: "127.0.0.1." (one trailing dot), "2130706433", "0x7f.1" and "127.1" all
    name 127.0.0.1."""
    name = host[:-1] if host.endswith(".") else host
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(name))
    except (OSError, ValueError):
        return None


async def check(url: str) -> None:
    """Refuse a URL whose host is, or resolves to, a non-public address. A name that does not
    resolve now is let through: it is checked again before every request anyway."""
    host = urllib.parse.urlsplit(url).hostname or ""
    address = literal(host)
    if address is not None:
        addresses = [address]
    else:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, None)
        except (OSError, UnicodeError):
            return
        addresses = [str(info[4][0]) for info in found]
    if not addresses or not all(public(a) for a in addresses):
        raise PrivateDestination(host)


def operator_hosts(*urls: str | None) -> frozenset[str]:
    """The hosts the operator configured: these URLs' and the proxies' (from the
    environment)."""
    proxies = urllib.request.getproxies_environment().values()
    named: Iterable[str | None] = (*urls, *proxies)
    return frozenset(h for u in named if u and (h := urllib.parse.urlsplit(u).hostname))


class PublicOnly(AbstractResolver):
    """aiohttp's resolver, keeping public addresses only (``exempt`` hosts keep them all)."""

    def __init__(self, exempt: frozenset[str] = frozenset()) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._exempt = exempt

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host in self._exempt:
            return found
        kept = [r for r in found if public(r["host"])]
        if not kept:
            raise OSError("not a public address")  # the delivery log names no address
        return kept

    async def admit(self, host: str, *, proxied: bool) -> None:
        """OSError unless a request to ``host`` reaches public addresses only, for what
        ``resolve`` never sees: aiohttp connects to an IP literal without asking it, and through
        a proxy the proxy resolves the name. So a literal is checked here, and a proxied name
        resolved here first: every address must be public (the proxy may take any of them). A
        name resolving differently for the proxy a moment later (rebinding) is the proxy's to
        refuse: it should deny private destinations itself."""
        if host in self._exempt:
            return
        address = literal(host)
        if address is not None:
            addresses = [address]
        elif not proxied:
            return  # the connector resolves it through ``resolve``
        else:
            found = await self._inner.resolve(host, 0, socket.AF_UNSPEC)
            addresses = [r["host"] for r in found]
        if not addresses or not all(public(a) for a in addresses):
            raise OSError("not a public address")

    async def close(self) -> None:
        await self._inner.close()


class PublicConnector(aiohttp.TCPConnector):
    """aiohttp's connector resolving through ``PublicOnly`` (``guard``): the client checks
    each request's host with ``guard.admit`` before sending it (``core.webhooks.post``)."""

    def __init__(self, exempt: frozenset[str] = frozenset()) -> None:
        self.guard = PublicOnly(exempt)
        super().__init__(resolver=self.guard)
