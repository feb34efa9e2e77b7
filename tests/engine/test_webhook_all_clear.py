"""An endpoint's ``alert.resolved`` waits for no other endpoint's events: an all-clear is held
behind the alarm to the same recipient (core.withdrawals.behind_alarms), and for a webhook
the recipient is its endpoint, not every endpoint of the organisation. Found walking the API
as an integrator: with a second endpoint down (or paused), the first endpoint's
``alert.resolved`` was held until the other's next retry (up to an hour, or a paused
endpoint's hourly look), so the working case system kept the alert open. Both backends."""

from __future__ import annotations

import json
from datetime import timedelta

from core import alert_handling, webhooks
from core.db import transaction
from core.models import Alert
from tests.engine.conftest import T0, build_world
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import dispatcher, panic
from tests.standins.http_receiver import Receiver

SEC = timedelta(seconds=1)


async def test_a_resolved_event_does_not_wait_for_another_endpoints_retry(  # type: ignore[no-untyped-def]
    sessions, vault
) -> None:
    async with Receiver(statuses=[204]) as good, Receiver(statuses=[503]) as down:
        world = await build_world(sessions, vault, channel="standin", webhook_url=good.url())
        async with transaction(sessions) as s:
            await webhooks.add(s, vault, org_id=world.org_id, url=down.url())
        alert_id = await panic(world)  # the desk is told at once: alert.triggered to both
        async with webhooks.client() as http:
            d = dispatcher(world, {"standin": StandIn("standin")}, http)
            await d.drain(T0)  # the good endpoint has it; the other answers 503, retried later
            async with transaction(sessions) as s:
                alert = await s.get(Alert, alert_id)
                assert alert is not None
                assert await alert_handling.resolve(
                    s, vault, alert=alert, outcome="safe", actor="token:x", now=T0
                )
            await d.drain(T0)  # the other endpoint's retry is not due yet
        types = [json.loads(h.body)["type"] for h in good.hits]
        assert types == ["alert.triggered", "alert.resolved"], types
        assert [json.loads(h.body)["type"] for h in down.hits] == ["alert.triggered"]


async def test_an_endpoints_resolved_event_still_waits_for_its_own_alarm(  # type: ignore[no-untyped-def]
    sessions, vault
) -> None:
    """The hold itself stays for the same endpoint: its ``alert.resolved`` is not sent while
    its own ``alert.triggered`` waits for a retry."""
    async with Receiver(statuses=[503, 204]) as flaky:
        world = await build_world(sessions, vault, channel="standin", webhook_url=flaky.url())
        alert_id = await panic(world)
        async with webhooks.client() as http:
            d = dispatcher(world, {"standin": StandIn("standin")}, http)
            await d.drain(T0)  # 503: retried later
            async with transaction(sessions) as s:
                alert = await s.get(Alert, alert_id)
                assert alert is not None
                await alert_handling.resolve(
                    s, vault, alert=alert, outcome="safe", actor="token:x", now=T0
                )
            await d.drain(T0)
            assert [json.loads(h.body)["type"] for h in flaky.hits] == ["alert.triggered"]
            await d.drain(T0 + 10 * SEC)
        types = sorted(json.loads(h.body)["type"] for h in flaky.hits)
        assert types == ["alert.resolved", "alert.triggered", "alert.triggered"], types
