"""A desk's webhook receiver that is slow to answer holds back no notice to a person: webhook
sends hold no pass of the dispatcher (found in review; both backends), and how many wait on
receivers at once is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy import select

from core import dispatch, webhooks
from core.db import transaction
from core.dispatch import Dispatcher
from core.messages import Outbound
from core.models import ChannelAddress, Webhook
from core.outbox import Item, enqueue_many
from tests.engine.conftest import build_world
from tests.engine.standin import StandIn
from tests.standins.http_receiver import serving

TARPIT_S = 4.0  # in production up to the webhook client's timeout, per send


async def test_a_panic_notice_does_not_wait_for_another_desks_slow_webhook(  # type: ignore[no-untyped-def]
    sessions, vault
) -> None:
    async def tarpit(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(TARPIT_S)
        return web.Response(status=204)

    async with serving(tarpit) as url:
        waited, sent = await _panic_while_webhooks_wait(sessions, vault, url)
    assert sent and waited < TARPIT_S / 2, f"the panic notice waited {waited:.1f} s"


async def _panic_while_webhooks_wait(  # type: ignore[no-untyped-def]
    sessions, vault, url: str
) -> tuple[float, bool]:
    """Three P0 webhook events to ``url`` come due one after another (retries), then another
    desk's defender panics: how long its notice to a responder waited."""
    slow = await build_world(sessions, vault, handle="a-heron", webhook_url=url)
    other = await build_world(sessions, vault, channel="fast", handle="b-heron", webhook_url=None)
    async with sessions() as s:
        hook = (
            await s.execute(select(Webhook.id).where(Webhook.org_id == slow.org_id))
        ).scalar_one()
        responder = (
            await s.execute(
                select(ChannelAddress.id).where(
                    ChannelAddress.responder_id == other.responder_ids[0]
                )
            )
        ).scalar_one()
    fast = StandIn("fast")
    async with webhooks.client() as http:
        d = Dispatcher(
            sessions, vault, {"fast": fast}, owner="t", http=http, limits={}, idle_s=0.05
        )
        task = asyncio.create_task(d.run())
        try:
            for n in range(3):  # P0 webhook events coming due one after another (retries)
                raw = json.dumps({"event_id": f"a-{n}"}).encode()
                item = Item("webhook", 0, f"a:{n}|webhook:{hook.hex}", raw=raw, webhook_id=hook)
                async with transaction(sessions) as s:
                    await enqueue_many(s, vault, [item], now=datetime.now(UTC))
                await asyncio.sleep(0.3)
            async with transaction(sessions) as s:  # another desk's defender panics
                notice = Item("fast", 0, "b-panic", Outbound(text="PANIC"), address_id=responder)
                await enqueue_many(s, vault, [notice], now=datetime.now(UTC))
            started = time.monotonic()
            while not fast.sent and time.monotonic() - started < 3 * TARPIT_S:
                await asyncio.sleep(0.02)
            waited = time.monotonic() - started
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return waited, bool(fast.sent)


async def test_webhook_sends_in_flight_are_bounded(  # type: ignore[no-untyped-def]
    sessions, vault, monkeypatch
) -> None:
    """A receiver that never answers quickly does not make the dispatcher start a send for
    every queued event: at most HOOK_SENDS wait on it at once, the rest wait in the queue,
    and every event still arrives."""
    monkeypatch.setattr(dispatch, "HOOK_SENDS", 3)
    now_open, most, arrived = 0, 0, 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal now_open, most, arrived
        now_open += 1
        most = max(most, now_open)
        await request.read()
        await asyncio.sleep(0.3)
        now_open -= 1
        arrived += 1
        return web.Response(status=204)

    async with serving(slow) as url:
        world = await build_world(sessions, vault, handle="c-heron", webhook_url=url)
        async with sessions() as s:
            hook = (
                await s.execute(select(Webhook.id).where(Webhook.org_id == world.org_id))
            ).scalar_one()
        items = [
            Item(
                "webhook",
                0,
                f"c:{n}|webhook:{hook.hex}",
                raw=json.dumps({"event_id": f"c-{n}"}).encode(),
                webhook_id=hook,
            )
            for n in range(8)
        ]
        async with transaction(sessions) as s:
            await enqueue_many(s, vault, items, now=datetime.now(UTC))
        async with webhooks.client() as http:
            d = Dispatcher(sessions, vault, {}, owner="t", http=http, limits={}, idle_s=0.05)
            task = asyncio.create_task(d.run())
            try:
                started = time.monotonic()
                while arrived < len(items) and time.monotonic() - started < 10:
                    await asyncio.sleep(0.02)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    assert arrived == len(items)
    assert most == 3, f"{most} sends waited on the receiver at once"
