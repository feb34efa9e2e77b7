"""A filed report tells the desk's webhooks: signed, and nothing the defender wrote."""

from __future__ import annotations

import json
import uuid

import aiohttp
from sqlalchemy import select, update

from core import webhook_events, webhook_secrets, webhooks
from core.crypto import generate_org_keypair
from core.db import transaction
from core.dispatch import Dispatcher
from core.models import Defender, Organisation, OutboxMessage, Report, Webhook
from core.outbox import enqueue_many
from tests.flows.conftest import Desk
from tests.flows.test_report import CANARY, file_report
from tests.standins.http_receiver import Receiver


async def add_hook(desk: Desk, url: str, org_id: uuid.UUID | None = None) -> str:
    async with transaction(desk.sessions) as s:
        _hook, secret = await webhooks.add(s, desk.vault, org_id=org_id or desk.org.id, url=url)
    return secret


async def report_events(desk: Desk) -> list[OutboxMessage]:
    """The outbox rows of ``report.filed`` events, by their key (a sent row's body is shredded)."""
    async with desk.sessions() as s:
        rows = (
            await s.execute(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
        ).scalars()
        return [r for r in rows if ":report.filed|webhook:" in r.idempotency_key]


def dispatcher(desk: Desk, http: aiohttp.ClientSession) -> Dispatcher:
    """The real dispatcher, sending webhook rows only."""
    return Dispatcher(
        desk.sessions, desk.vault, {}, owner="test", http=http, limits={}, rng=lambda: 0.5
    )


async def test_a_filed_report_reaches_the_desks_webhook_signed_and_without_its_words(
    desk: Desk,
) -> None:
    async with Receiver() as ours, Receiver() as theirs, webhooks.client() as http:
        secret = await add_hook(desk, ours.url())
        async with transaction(desk.sessions) as s:  # another organisation, its own endpoint
            public, _private = generate_org_keypair()
            other = Organisation(id=uuid.uuid4(), name="Other desk", public_key=public)
            s.add(other)
        await add_hook(desk, theirs.url(), other.id)
        report, _shown = await file_report(desk)

        [row] = await report_events(desk)  # one event, to our endpoint only
        queued = json.loads(row.get(desk.vault, "payload_enc"))
        assert queued["type"] == "report.filed"
        await dispatcher(desk, http).drain(desk.clock.now)

    async with desk.sessions() as s:
        handle = (await s.execute(select(Defender.handle))).scalar_one()
    [hit] = [h for h in ours.hits if json.loads(h.body)["type"] == "report.filed"]
    assert theirs.hits == []
    raw = hit.body
    assert webhook_secrets.verify(
        hit.headers["Amparo-Signature"], raw, [secret.encode()], now=desk.clock.now.timestamp()
    )
    body = json.loads(raw)
    assert hit.headers["Amparo-Event-Id"] == body["event_id"] == queued["event_id"]
    assert body == {
        "event_id": body["event_id"],
        "type": "report.filed",
        "dedup_key": f"report:{report.id}",
        "org": str(desk.org.id),
        "alert": None,
        "report": {
            "id": str(report.id),
            "defender": handle,
            "filed_at": desk.clock.now.isoformat(),
        },
    }
    # Nothing the defender wrote or chose: not the account, the place, nor the act's code.
    for words in (CANARY, "two laptops", "Barrio Santa Fe", report.receipt_code):
        assert words.encode() not in raw
    assert "040101" not in json.dumps(body["report"])  # a raid (HURIDOCS mt4), sealed only


async def test_an_organisation_without_webhooks_queues_no_report_event(desk: Desk) -> None:
    await file_report(desk)
    async with desk.sessions() as s:
        assert (await s.execute(select(Report))).scalar_one() is not None
    assert await report_events(desk) == []


async def test_a_paused_webhook_gets_no_report_event_until_it_is_resumed(desk: Desk) -> None:
    """Paused, like for alert events (core.webhooks.endpoints): held, not sent; the desk gets
    it when it resumes its endpoint."""
    async with Receiver() as ours, webhooks.client() as http:
        await add_hook(desk, ours.url())
        async with transaction(desk.sessions) as s:
            await s.execute(update(Webhook).values(active=False))
        await file_report(desk)
        d = dispatcher(desk, http)
        await d.drain(desk.clock.now)
        assert ours.hits == []
        [held] = await report_events(desk)
        assert str(held.state) == "pending" and held.attempts == 0

        async with transaction(desk.sessions) as s:
            hook = (await s.execute(select(Webhook))).scalar_one()
            await webhooks.resume(s, hook, desk.clock.now)
        await d.drain(desk.clock.now)
    sent = [json.loads(h.body)["type"] for h in ours.hits]
    assert sent.count("report.filed") == 1


async def test_queuing_a_reports_event_again_sends_it_once(desk: Desk) -> None:
    """A redone transaction queues the same key: nothing twice."""
    await add_hook(desk, "http://desk.invalid/hook")
    report, _shown = await file_report(desk)
    async with transaction(desk.sessions) as s:
        hooks = await webhooks.endpoints(s, desk.org.id)
        again = webhook_events.report_items(report, hooks, handle="quiet-heron-41")
        await enqueue_many(s, desk.vault, again, now=desk.clock.now)
    assert len(await report_events(desk)) == 1
