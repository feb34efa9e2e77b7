"""A webhook receiver's answer is never read whole, nor inflated (found in review)."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime

from aiohttp import web

from core import webhooks
from core.crypto import Vault
from core.messages import DeliveryError
from core.models import OutboxMessage, Webhook
from tests.standins.http_receiver import serving

CHUNK = b"x" * (1 << 20)
OFFERED_MB = 192  # a malicious endpoint could offer gigabytes within the 15 s timeout


async def _deliver(vault: Vault, url: str) -> None:
    """One webhook event to ``url``, as the dispatcher sends it; its failure is no matter."""
    hook = Webhook(id=uuid.uuid4(), org_id=uuid.uuid4(), url=url)
    hook.put(vault, "secret_enc", "s" * 43)
    row = OutboxMessage(id=uuid.uuid4(), channel="webhook", idempotency_key="k")
    row.put(vault, "payload_enc", json.dumps({"event_id": "e1"}).encode())
    async with webhooks.client() as http:
        with contextlib.suppress(DeliveryError):
            await webhooks.post(http, vault, hook, row, datetime.now(UTC))


async def test_a_huge_answer_body_is_not_read_into_memory(vault: Vault) -> None:
    written = 0

    async def flood(request: web.Request) -> web.StreamResponse:
        nonlocal written
        await request.read()
        answer = web.StreamResponse(status=200)
        answer.content_length = OFFERED_MB * len(CHUNK)
        await answer.prepare(request)
        try:
            for _ in range(OFFERED_MB):
                await answer.write(CHUNK)
                written += len(CHUNK)
        except (ConnectionResetError, ConnectionError):
            pass
        return answer

    async with serving(flood) as url:
        await _deliver(vault, url)
    mb = written / (1 << 20)
    assert mb < 8, f"the dispatcher read {mb:.0f} MB of the receiver's answer into memory"


async def test_a_compressed_answer_is_not_inflated_whole(vault: Vault) -> None:
    """aiohttp sends Accept-Encoding: gzip, deflate and read() inflates: a few hundred KB on
    the wire become hundreds of MB in the worker that also runs the escalation sweep."""
    import resource
    import zlib

    inflated_mb = 512
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    bomb = b"".join(squeezer.compress(CHUNK) for _ in range(inflated_mb)) + squeezer.flush()

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with serving(answer) as url:
        await _deliver(vault, url)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, (
        f"{len(bomb) // 1024} KB on the wire grew the process by {grown_mb:.0f} MB"
    )
