"""Webhook endpoints, rotation, delivery log and replay; the documented receiver's vectors."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from api.routes.webhooks import RECEIVER
from core import rollcall_closing, webhook_events, webhook_secrets
from core.db import transaction
from core.models import Broadcast, OutboxMessage, OutboxState, Webhook
from core.rollcalls import Tally
from tests.api.conftest import Desk

Accept = Callable[[bytes, dict[str, str], bytes], bool]


def receiver() -> Accept:
    """The receiver example from the API documentation, run as it is written."""
    code = re.search(r"```python\n(.*?)```", RECEIVER, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    accept: Accept = namespace["accept"]
    return accept


def signed(raw: bytes, secrets_: list[bytes], t: int, event_id: str = "e1") -> dict[str, str]:
    return {
        "Amparo-Signature": webhook_secrets.signature(secrets_, raw, t),
        "Amparo-Event-Id": event_id,
    }


def test_it_documents_a_receiver_that_rejects_forgeries_and_replays() -> None:
    accept, secret, now = receiver(), b"s" * 32, int(time.time())
    raw = json.dumps({"event_id": "e1", "type": "alert.triggered"}, separators=(",", ":")).encode()
    assert accept(raw, signed(raw, [secret], now), secret)
    assert not accept(raw, signed(raw, [secret], now), secret)  # the same event id again
    tampered = raw.replace(b"triggered", b"resolved!")
    assert not accept(tampered, signed(raw, [secret], now, "e2"), secret)
    reserialised = json.dumps(json.loads(raw)).encode()
    assert not accept(reserialised, signed(raw, [secret], now, "e3"), secret)
    assert not accept(raw, signed(raw, [secret], now - 301, "e4"), secret)
    assert not accept(raw, signed(raw, [secret], now + 301, "e5"), secret)
    assert not accept(raw, signed(raw, [b"x" * 32], now, "e6"), secret)
    other = json.dumps({"event_id": "e7", "type": "alert.triggered"}).encode()
    assert accept(other, signed(other, [b"x" * 32, secret], now, "e7"), secret)  # several v1=


async def test_it_rotates_with_two_valid_secrets_then_one(desk: Desk) -> None:
    assert desk.a.webhook is not None
    async with await desk.client(desk.a, "admin") as c:
        made = (await c.post("/api/v1/webhooks", json={"url": "https://cases.example/in"})).json()
        rotated = (
            await c.post(f"/api/v1/webhooks/{made['id']}/rotate", json={"overlap_hours": 1})
        ).json()
    old, new = made["secret"].encode(), rotated["secret"].encode()
    raw, now = b'{"event_id":"e1"}', datetime.now(UTC)
    async with desk.sessions() as s:
        hook = await s.get(Webhook, uuid.UUID(rotated["id"]))
        assert hook is not None
        during = webhook_secrets.signing_secrets(desk.vault, hook, now)
        after = webhook_secrets.signing_secrets(
            desk.vault, hook, now + timedelta(hours=1, seconds=1)
        )
    t = int(now.timestamp())
    for secret in (old, new):
        assert webhook_secrets.verify(
            webhook_secrets.signature(during, raw, t), raw, [secret], now=t
        )
    assert webhook_secrets.verify(webhook_secrets.signature(after, raw, t), raw, [new], now=t)
    assert not webhook_secrets.verify(webhook_secrets.signature(after, raw, t), raw, [old], now=t)
    assert rotated["previous_secret_until"] is not None and old != new


async def test_a_second_rotation_keeps_the_first_secret_until_its_overlap_ends(desk: Desk) -> None:
    """Rotating again within the overlap (a leak found right after a rotation) must not cut off
    a receiver still on the original secret; an overlap of 0 ends every old secret."""
    async with await desk.client(desk.a, "admin") as c:
        made = (await c.post("/api/v1/webhooks", json={"url": "https://cases.example/in"})).json()
        path = f"/api/v1/webhooks/{made['id']}/rotate"
        first = (await c.post(path, json={"overlap_hours": 24})).json()
        second = (await c.post(path, json={"overlap_hours": 48})).json()
        async with desk.sessions() as s:
            hook = await s.get(Webhook, uuid.UUID(made["id"]))
            assert hook is not None
            now = datetime.now(UTC)
            during = webhook_secrets.signing_secrets(desk.vault, hook, now)
            day = webhook_secrets.signing_secrets(desk.vault, hook, now + timedelta(hours=25))
            later = webhook_secrets.signing_secrets(desk.vault, hook, now + timedelta(hours=49))
        third = (await c.post(path, json={"overlap_hours": 1})).json()
        async with desk.sessions() as s:
            hook = await s.get(Webhook, uuid.UUID(made["id"]))
            assert hook is not None
            capped = webhook_secrets.signing_secrets(desk.vault, hook, datetime.now(UTC))
        fourth = (await c.post(path, json={"overlap_hours": 0})).json()
        async with desk.sessions() as s:
            hook = await s.get(Webhook, uuid.UUID(made["id"]))
            assert hook is not None
            ended = webhook_secrets.signing_secrets(desk.vault, hook, datetime.now(UTC))
    original, one, two = (x["secret"].encode() for x in (made, first, second))
    assert during == [two, one, original]
    assert day == [two, one] and later == [two]
    assert datetime.fromisoformat(second["previous_secret_until"]) > now + timedelta(hours=47)
    # a third rotation ends the oldest (three sign at most); an overlap of 0 ends them all
    assert capped == [third["secret"].encode(), two, one]
    assert ended == [fourth["secret"].encode()]
    assert fourth["previous_secret_until"] is None


async def test_a_secret_rotated_before_the_list_still_signs_until_its_end(desk: Desk) -> None:
    """A row rotated by an earlier version holds the replaced secret itself."""
    hook = desk.a.webhook
    assert hook is not None
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        row = await s.get(Webhook, hook.id)
        assert row is not None
        row.put(desk.vault, "previous_secret_enc", b"old-secret")
        row.previous_until = now + timedelta(hours=2)
        current = row.get(desk.vault, "secret_enc")
        await webhook_secrets.rotate(s, desk.vault, hook=row, now=now, overlap=timedelta(hours=1))
        signing = webhook_secrets.signing_secrets(desk.vault, row, now)
        later = webhook_secrets.signing_secrets(desk.vault, row, now + timedelta(minutes=61))
    assert signing[1:] == [current, b"old-secret"] and len(later) == 1


async def test_it_logs_deliveries_and_replays_a_dead_one(desk: Desk) -> None:
    hook, dead = desk.a.webhook, desk.a.dead
    assert hook is not None and dead is not None
    path = f"/api/v1/webhooks/{hook.id}/deliveries"
    async with await desk.client(desk.a, "admin") as c:
        log = (await c.get(path, params={"state": "dead"})).json()
        first = await c.post(f"{path}/{dead.id}/replay")
        second = await c.post(f"{path}/{dead.id}/replay")
    assert [(d["id"], d["event"], d["attempts"]) for d in log] == [
        (str(dead.id), "alert.triggered", 8)
    ]
    assert (first.status_code, second.status_code) == (202, 409)
    async with transaction(desk.sessions) as s:
        row = await s.get(OutboxMessage, dead.id)
        assert row is not None and row.state is OutboxState.pending


async def test_an_endpoint_removed_gets_nothing_more_and_leaves_nothing(desk: Desk) -> None:
    """A desk system retired, or a receiver compromised: the endpoint goes with its queued and
    past deliveries; the other organisation's endpoint is untouched; it is audited."""
    hook, dead = desk.a.webhook, desk.a.dead
    assert hook is not None and dead is not None and desk.b.webhook is not None
    async with await desk.client(desk.a, "admin") as c:
        gone = await c.delete(f"/api/v1/webhooks/{hook.id}")
        again = await c.delete(f"/api/v1/webhooks/{hook.id}")
        listed = (await c.get("/api/v1/webhooks")).json()
        audit = (await c.get("/api/v1/audit")).json()
    assert (gone.status_code, again.status_code) == (204, 404)
    assert str(hook.id) not in [h["id"] for h in listed]
    assert "webhook.delete" in [e["action"] for e in audit["items"]]
    async with desk.sessions() as s:
        assert await s.get(Webhook, hook.id) is None
        rows = (await s.execute(select(OutboxMessage.webhook_id))).scalars().all()
        assert hook.id not in rows and await s.get(OutboxMessage, dead.id) is None
        assert await s.get(Webhook, desk.b.webhook.id) is not None


async def test_an_endpoint_moves_to_a_new_url_keeping_its_secret_and_history(desk: Desk) -> None:
    """The desk system moved: the admin changes the endpoint's URL (audited); the secret, the
    state and the deliveries stay. In production the new URL passes the same checks as a new
    endpoint's; another organisation cannot move it."""
    from core.config import Mode, Settings

    hook, dead = desk.a.webhook, desk.a.dead
    assert hook is not None and dead is not None
    path = f"/api/v1/webhooks/{hook.id}"
    async with await desk.client(desk.a, "admin") as c, await desk.client(desk.b, "admin") as b:
        moved = await c.patch(path, json={"url": "https://desk.example.org/amparo"})
        theirs = await b.patch(path, json={"url": "https://evil.example.net/in"})
        paused = await c.patch(path, json={"active": False})
        desk.app.state.settings = Settings(mode=Mode.production)
        plain = await c.patch(path, json={"url": "http://desk.example.org/in"})
        private = await c.patch(path, json={"url": "https://10.0.0.5/in"})
        junk = await c.patch(path, json={"url": "ftp://desk.example.org/"})
        log = (await c.get(f"{path}/deliveries", params={"state": "dead"})).json()
        audit = [e["action"] for e in (await c.get("/api/v1/audit")).json()["items"]]
    assert (moved.status_code, theirs.status_code, paused.status_code) == (200, 404, 200)
    assert moved.json()["url"] == "https://desk.example.org/amparo" and moved.json()["active"]
    assert paused.json() == {**moved.json(), "active": False}
    assert (plain.status_code, private.status_code, junk.status_code) == (400, 400, 400)
    assert [d["id"] for d in log] == [str(dead.id)]
    assert audit.count("webhook.move") == 1 and audit.count("webhook.update") == 1
    async with desk.sessions() as s:
        kept = await s.get(Webhook, hook.id)
    assert kept is not None and kept.url == "https://desk.example.org/amparo"
    assert kept.get(desk.vault, "secret_enc") == hook.get(desk.vault, "secret_enc")


async def test_it_refuses_plain_http_endpoints_in_production(desk: Desk) -> None:
    from core.config import Mode, Settings

    desk.app.state.settings = Settings(mode=Mode.production)
    async with await desk.client(desk.a, "admin") as c:
        answer = await c.post("/api/v1/webhooks", json={"url": "http://10.0.0.1/in"})
    assert answer.status_code == 400


PRIVATE = (
    "https://127.0.0.1:8080/v1/send",  # loopback (signal-cli's REST daemon listens there)
    "https://localhost/in",  # a name resolving to loopback
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "https://10.0.0.5/in",
    "https://192.168.1.1/in",
    "https://100.64.0.1/in",  # shared (carrier-grade NAT)
    "https://[::1]/in",
    "https://[::ffff:127.0.0.1]/in",
    "https://[fe80::1]/in",
    "https://127.0.0.1./in",  # a trailing dot: aiohttp and a proxy still read 127.0.0.1
    "https://2130706433/in",  # and so does the C resolver, each of these
    "https://0x7f.1/in",
    "https://127.1/in",
)


async def test_production_refuses_webhooks_to_private_addresses(desk: Desk) -> None:
    from core.config import Mode, Settings

    desk.app.state.settings = Settings(mode=Mode.production)
    async with await desk.client(desk.a, "admin") as c:
        answers = {u: (await c.post("/api/v1/webhooks", json={"url": u})) for u in PRIVATE}
        public = await c.post("/api/v1/webhooks", json={"url": "https://8.8.8.8/desk"})
    assert {u: a.status_code for u, a in answers.items()} == dict.fromkeys(PRIVATE, 400)
    assert "public address" in answers[PRIVATE[0]].json()["detail"]
    assert public.status_code == 201
    async with desk.sessions() as s:
        kept = set((await s.execute(select(Webhook.url))).scalars())
    assert not kept & set(PRIVATE)
    desk.app.state.settings = Settings(mode=Mode.production, webhook_allow_private=True)
    async with await desk.client(desk.a, "admin") as c:  # an operator's choice: a desk nearby
        allowed = await c.post("/api/v1/webhooks", json={"url": "https://10.0.0.5/in"})
    assert allowed.status_code == 201


def test_the_receiver_documentation_names_every_event_and_its_fields() -> None:
    """Found walking the API as an integrator: the documentation the desk serves (POST
    /webhooks in the OpenAPI) named alert.triggered and report.filed only; nothing said which
    other types arrive, nor what a rollcall.closed event's ``rollcall`` holds."""
    for event in webhook_events.EVENTS:
        assert f"`{event}`" in RECEIVER, event
    closed = json.loads(
        rollcall_closing.closed_body(
            Broadcast(id=uuid.uuid4(), org_id=uuid.uuid4(), created_at=datetime.now(UTC)),
            Tally(recipients=3, safe=1, help=1, unanswered=1),
            event_id="e1",
        )
    )
    for name in (*closed, *closed["rollcall"]):
        assert f"`{name}`" in RECEIVER, name
