"""The engine's webhook client in production reaches public addresses only: a name that
resolves to a private one (or rebinds to it later) is refused at connect time, and the
delivery log does not tell an open port from a closed one."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from core import webhooks
from core.crypto import Vault
from core.destinations import operator_hosts, public
from core.messages import DeliveryError
from core.models import OutboxMessage, Webhook
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
