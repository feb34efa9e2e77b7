"""The engine's webhook client in production reaches public addresses only: a name that
resolves to a private one (or rebinds to it later) is refused at connect time, and the
delivery log does not tell an open port from a closed one."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from core import webhooks
from core.crypto import Vault
from core.destinations import check, operator_hosts, public
from core.messages import DeliveryError
from core.models import OutboxMessage, Webhook
from core.proxies import proxy_for
from tests.standins.http_receiver import Receiver


def _event(vault: Vault, url: str) -> tuple[Webhook, OutboxMessage]:
    hook = Webhook(id=uuid.uuid4(), org_id=uuid.uuid4(), url=url)
    hook.put(vault, "secret_enc", "s" * 43)
    row = OutboxMessage(id=uuid.uuid4(), channel="webhook", idempotency_key="k")
    row.put(vault, "payload_enc", json.dumps({"event_id": "e1"}).encode())
    return hook, row


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(vault: Vault) -> None:
    async with Receiver(statuses=[404]) as inside:
        url = inside.url().replace("127.0.0.1", "localhost")
        hook, row = _event(vault, url)
        async with webhooks.client(public_only=True) as http:
            with pytest.raises(DeliveryError) as refused:
                await webhooks.post(http, vault, hook, row, datetime.now(UTC))
        assert inside.hits == [] and "404" not in str(refused.value)
        async with webhooks.client(public_only=True, exempt=frozenset({"localhost"})) as http:
            with pytest.raises(DeliveryError, match="404"):  # the operator's own host
                await webhooks.post(http, vault, hook, row, datetime.now(UTC))
        assert len(inside.hits) == 1


async def test_an_ip_literal_is_checked_though_aiohttp_connects_without_resolving(
    vault: Vault,
) -> None:
    async with Receiver() as inside:
        hook, row = _event(vault, inside.url())  # http://127.0.0.1:<port>/hook
        async with webhooks.client(public_only=True) as http:
            with pytest.raises(DeliveryError, match="not a public address"):
                await webhooks.post(http, vault, hook, row, datetime.now(UTC))
    assert inside.hits == []


# The C resolver (and a proxy) reads each of these as 127.0.0.1.
LOOPBACK_SPELLINGS = ("localhost", "127.0.0.1", "127.0.0.1.", "2130706433", "0x7f.1", "127.1")


@asynccontextmanager
async def standin_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A proxy on 127.0.0.1 that records each request line (CONNECT desk.example:443 ...) and
    refuses it; yields its URL and the lines."""
    lines: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await reader.readline()).decode().strip())
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", lines
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def desk_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """desk.example resolves to a public address, here and for the proxy."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "desk.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port or 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "ALL_PROXY"])
async def test_through_a_proxy_a_name_resolving_to_loopback_never_reaches_the_proxy(
    vault: Vault, monkeypatch: pytest.MonkeyPatch, variable: str, desk_is_public: None
) -> None:
    """The proxy resolves the name itself, where the client's resolver would never see it: the
    client resolves it first, and only a public name goes to the proxy."""
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    async with standin_proxy() as (proxy_url, lines):
        monkeypatch.setenv(variable, proxy_url)
        # No exemption: the stand-in is at an IP literal, which aiohttp connects to as it is.
        async with webhooks.client(public_only=True) as http:
            for host in LOOPBACK_SPELLINGS:
                hook, row = _event(vault, f"https://{host}/hook")
                proxy = proxy_for(hook.url)
                assert proxy == proxy_url
                with pytest.raises(DeliveryError, match="not a public address"):
                    await webhooks.post(http, vault, hook, row, datetime.now(UTC), proxy)
            assert lines == []
            hook, row = _event(vault, "https://desk.example/hook")
            with pytest.raises(DeliveryError, match="Proxy"):  # the stand-in refuses
                await webhooks.post(http, vault, hook, row, datetime.now(UTC), proxy_url)
        assert lines == ["CONNECT desk.example:443 HTTP/1.1"]
        async with webhooks.client(public_only=True, exempt=frozenset({"localhost"})) as http:
            hook, row = _event(vault, "https://localhost/hook")  # the operator's own host
            with pytest.raises(DeliveryError, match="Proxy"):
                await webhooks.post(http, vault, hook, row, datetime.now(UTC), proxy_url)
        assert lines[1:] == ["CONNECT localhost:443 HTTP/1.1"]


async def test_a_url_is_refused_for_any_spelling_of_a_private_address() -> None:
    for host in (*LOOPBACK_SPELLINGS, "[::ffff:127.0.0.1]", "10.0.0.5.", "0xa.0.0.5"):
        with pytest.raises(ValueError):
            await check(f"https://{host}/in")
    for host in ("8.8.8.8", "8.8.8.8.", "134744072"):  # 8.8.8.8 too
        await check(f"https://{host}/in")


def test_public_addresses_are_told_from_the_rest() -> None:
    assert public("8.8.8.8") and public("2001:4860:4860::8888")
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254",
                    "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1%eth0",
                    "::ffff:10.0.0.1", "fc00::1"):  # fmt: skip
        assert not public(address), address


def test_the_operators_hosts_are_the_heartbeats_and_the_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    hosts = operator_hosts("https://hc.internal/ping/abc", None)
    assert hosts == {"hc.internal", "proxy.internal"}
