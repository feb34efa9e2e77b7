"""Found in review (both backends): a burst of logins passed the throttles' read-only check
all at once; a demoted on-duty responder became the only one paged; the published receiver
example deduplicated on an unsigned header."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta

import httpx

from api.routes.webhooks import RECEIVER
from core import recipients, webhook_secrets
from core.db import transaction
from core.defenders import new_address
from core.throttle import Limits, Throttle
from tests.api.conftest import BASE, Desk
from tests.api.test_auth import creds


async def test_a_burst_of_wrong_passwords_gets_no_more_guesses_than_the_limit(
    desk: Desk,
) -> None:
    desk.app.state.limits = Limits(login_account=Throttle(5, 900))
    body = creds(desk) | {"password": "wrong"}
    async with desk.anonymous() as c:
        answers = await asyncio.gather(
            *(c.post("/api/v1/auth/login", json=body) for _ in range(20))
        )
    codes = [a.status_code for a in answers]
    assert codes.count(401) == 5 and codes.count(429) == 15


async def test_a_burst_from_one_address_is_capped_and_a_success_costs_it_nothing(
    desk: Desk,
) -> None:
    desk.app.state.limits = Limits(login_address=Throttle(3, 900))
    transport = httpx.ASGITransport(app=desk.app, client=("192.0.2.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        now = datetime.now(UTC)
        for step in (-1, 0, 1):  # three good logins from the desk's office (a code each)
            body = creds(desk, at=now + timedelta(seconds=30 * step))
            assert (await c.post("/api/v1/auth/login", json=body)).status_code == 200
        bodies = [{"username": f"nobody{i}", "password": "x", "totp": "123456"} for i in range(20)]
        answers = await asyncio.gather(*(c.post("/api/v1/auth/login", json=b) for b in bodies))
    codes = [a.status_code for a in answers]
    assert codes.count(401) == 3 and codes.count(429) == 17


async def test_a_demoted_or_disabled_responder_leaves_duty_and_is_not_paged(desk: Desk) -> None:
    a = desk.a
    responder, admin = a.responders["responder"], a.responders["admin"]
    async with transaction(desk.sessions) as s:
        for who, chat in ((responder, "111"), (admin, "222")):
            address = new_address(desk.vault, "telegram", chat)
            address.responder_id = who.id
            s.add(address)
    async with desk.sessions() as s:
        assert {r.person for r in await recipients.desk(s, a.org.id)} == {responder.id}
    async with await desk.client(a, "admin") as c:
        url = f"/api/v1/responders/{responder.id}"
        answer = await c.patch(url, json={"role": "observer"})
        assert answer.status_code == 200 and answer.json()["on_duty"] is False
        assert (await c.patch(url, json={"on_duty": True})).status_code == 409
        async with desk.sessions() as s:  # nobody on duty: every one who can act is paged
            assert {r.person for r in await recipients.desk(s, a.org.id)} == {admin.id}
        await c.patch(url, json={"role": "responder", "on_duty": True})
        answer = await c.patch(url, json={"active": False})
        assert answer.status_code == 200 and answer.json()["on_duty"] is False
    async with desk.sessions() as s:
        assert {r.person for r in await recipients.desk(s, a.org.id)} == {admin.id}


def test_the_documented_receiver_refuses_a_replay_under_another_event_id_header() -> None:
    code = re.search(r"```python\n(.*?)```", RECEIVER, re.S)
    assert code is not None
    ns: dict[str, object] = {}
    exec(code.group(1), ns)
    accept = ns["accept"]
    assert callable(accept)
    secret = b"s" * 32
    raw = json.dumps({"event_id": "e1", "type": "alert.resolved"}).encode()
    signed = webhook_secrets.signature([secret], raw, int(time.time()))
    first = accept(raw, {"Amparo-Signature": signed, "Amparo-Event-Id": "e1"}, secret)
    replay = accept(raw, {"Amparo-Signature": signed, "Amparo-Event-Id": "e1-x"}, secret)
    assert (first, replay) == (True, False)


async def test_an_ipv6_host_counts_as_its_slash_64(desk: Desk) -> None:
    """One host holds a whole /64: a fresh address per guess must not mean a fresh budget."""
    desk.app.state.limits = Limits(login_address=Throttle(3, 900))
    codes = []
    for n in range(5):
        transport = httpx.ASGITransport(app=desk.app, client=(f"2001:db8:1:2::{n + 1:x}", 4000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            body = {"username": f"nobody{n}", "password": "x", "totp": "123456"}
            codes.append((await c.post("/api/v1/auth/login", json=body)).status_code)
    assert codes == [401, 401, 401, 429, 429]
