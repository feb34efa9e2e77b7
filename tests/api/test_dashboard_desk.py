"""The dashboard's desk pages over HTTP (both backends): the on-duty roster, the webhooks with
their delivery log and replay, the audit trail; roles, tenancy, CSRF and the audit entries."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update

from api.dashboard_keys import fingerprint
from core import webhook_secrets
from core.db import transaction
from core.models import AuditEntry, OutboxMessage, OutboxState, Responder, Webhook
from tests.api.conftest import Desk, Org
from tests.api.test_dashboard import browser

SECRET = re.compile(r'<output class="webhook-secret"[^>]*>([^<]+)</output>')


async def on_duty(desk: Desk, org: Org, role: str) -> bool:
    async with desk.sessions() as s:
        r = await s.get(Responder, org.responders[role].id)
        assert r is not None
        return r.on_duty


async def entries(desk: Desk, action: str) -> list[AuditEntry]:
    async with desk.sessions() as s:
        query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
        return list((await s.execute(query)).scalars())


async def delivery(desk: Desk, org: Org) -> OutboxMessage:
    assert org.dead is not None
    async with desk.sessions() as s:
        row = await s.get(OutboxMessage, org.dead.id)
        assert row is not None
        return row


async def hook_of(desk: Desk, hook_id: uuid.UUID) -> Webhook:
    async with desk.sessions() as s:
        hook = await s.get(Webhook, hook_id)
        assert hook is not None
        return hook


async def test_the_roster_shows_who_is_on_duty_in_the_own_organisation(desk: Desk) -> None:
    async with browser(desk, desk.a, "observer") as (c, csrf):
        page = await c.get("/roster")
        assert page.status_code == 200 and 'href="/roster"' in page.text
        assert 'data-responder="responder-alpha"' in page.text
        assert "admin-alpha" not in page.text and "bravo" not in page.text
        # An observer is never paged: no form, and posting one anyway changes nothing.
        assert 'action="/roster/me"' not in page.text
        assert "Observers are never paged." in page.text
        answer = await c.post("/roster/me", data={"csrf": csrf, "duty": "on"})
        assert answer.headers["location"] == "/roster?notice=forbidden"
        assert "Your role does not allow this." in (await c.get(answer.headers["location"])).text
    assert not await on_duty(desk, desk.a, "observer")
    assert await entries(desk, "roster.on_duty") == []


async def test_a_responder_goes_off_and_on_duty_as_the_api_records_it(desk: Desk) -> None:
    who = desk.a.responders["responder"]
    async with browser(desk, desk.a, "responder") as (c, csrf):
        assert "You are on duty." in (await c.get("/roster")).text
        for forged in ("", "x" * 43):
            answer = await c.post("/roster/me", data={"csrf": forged, "duty": "off"})
            assert answer.headers["location"] == "/login"
        assert await on_duty(desk, desk.a, "responder")

        answer = await c.post("/roster/me", data={"csrf": csrf, "duty": "off"})
        assert answer.headers["location"] == "/roster"
        assert not await on_duty(desk, desk.a, "responder")
        page = await c.get("/roster")
        assert "You are off duty." in page.text and "Nobody is reachable" in page.text
        assert 'data-responder="responder-alpha"' not in page.text

        await c.post("/roster/me", data={"csrf": csrf, "duty": "on"})
        assert await on_duty(desk, desk.a, "responder")
    off, on = await entries(desk, "roster.off_duty"), await entries(desk, "roster.on_duty")
    assert len(off) == len(on) == 1
    for e in off + on:
        assert (e.actor, e.target, e.org_id) == (f"responder:{who.id}", str(who.id), desk.a.org.id)
    assert await on_duty(desk, desk.b, "responder")  # the other organisation's roster is as it was


async def test_webhooks_and_the_audit_log_are_for_admins_only(desk: Desk) -> None:
    assert desk.a.webhook is not None and desk.a.dead is not None
    replay = f"/webhooks/{desk.a.webhook.id}/deliveries/{desk.a.dead.id}/replay"
    for role in ("responder", "observer"):
        async with browser(desk, desk.a, role) as (c, csrf):
            page = await c.get("/")
            assert 'href="/webhooks"' not in page.text and 'href="/audit"' not in page.text
            for path in ("/webhooks", "/audit", "/audit?verify=1"):
                answer = await c.get(path)
                assert answer.status_code == 303 and answer.headers["location"] == "/"
            for path in (replay, f"/webhooks/{desk.a.webhook.id}/pause", "/webhooks"):
                data = {"csrf": csrf, "url": "https://evil.example/in"}
                answer = await c.post(path, data=data)
                assert answer.headers["location"] == "/webhooks?notice=forbidden"
    assert (await delivery(desk, desk.a)).state is OutboxState.dead
    assert (await hook_of(desk, desk.a.webhook.id)).active
    async with desk.sessions() as s:
        urls = (await s.execute(select(Webhook.url))).scalars().all()
    assert "https://evil.example/in" not in urls


async def test_an_admin_sees_the_delivery_log_and_replays_a_dead_delivery(desk: Desk) -> None:
    org = desk.a
    assert org.webhook is not None and org.dead is not None
    secret = (await hook_of(desk, org.webhook.id)).get(desk.vault, "secret_enc")
    assert secret is not None
    replay = f"/webhooks/{org.webhook.id}/deliveries/{org.dead.id}/replay"
    async with browser(desk, org, "admin") as (c, csrf):
        page = await c.get("/webhooks")
        assert page.status_code == 200
        assert f'data-webhook="{org.webhook.id}"' in page.text
        assert "https://desk.example/in" in page.text
        assert f'data-delivery="{org.dead.id}" class="state-dead"' in page.text
        assert "Given up" in page.text and "webhook HTTP 503" in page.text
        assert "alert.triggered" in page.text and f'action="{replay}"' in page.text
        assert secret.decode() not in page.text  # a secret is shown only when it is made
        assert desk.b.webhook is not None and str(desk.b.webhook.id) not in page.text

        for forged in ("", "x" * 43):
            answer = await c.post(replay, data={"csrf": forged})
            assert answer.headers["location"] == "/login"
        assert (await delivery(desk, org)).state is OutboxState.dead

        answer = await c.post(replay, data={"csrf": csrf})
        assert answer.headers["location"] == "/webhooks?notice=replayed"
        row = await delivery(desk, org)
        assert (row.state, row.attempts, row.last_error) == (OutboxState.pending, 0, None)
        page = await c.get(answer.headers["location"])
        assert "The delivery is queued again, with the same event id." in page.text
        assert f'action="{replay}"' not in page.text  # pending now: nothing to replay

        again = await c.post(replay, data={"csrf": csrf})
        assert again.headers["location"] == "/webhooks?notice=not_dead"
    [entry] = await entries(desk, "webhook.replay")
    admin = org.responders["admin"]
    assert (entry.actor, entry.target, entry.org_id) == (
        f"responder:{admin.id}",
        str(org.dead.id),
        org.org.id,
    )


async def test_another_organisations_webhook_and_delivery_answer_not_found(desk: Desk) -> None:
    a, b = desk.a, desk.b
    assert a.webhook is not None and b.webhook is not None and b.dead is not None
    async with browser(desk, a, "admin") as (c, csrf):
        for path in (
            f"/webhooks/{b.webhook.id}/deliveries/{b.dead.id}/replay",
            f"/webhooks/{a.webhook.id}/deliveries/{b.dead.id}/replay",  # B's row under A's hook
            f"/webhooks/{a.webhook.id}/deliveries/{uuid.uuid4()}/replay",
            f"/webhooks/{b.webhook.id}/rotate",
            f"/webhooks/{b.webhook.id}/pause",
            f"/webhooks/{a.webhook.id}/delete",
        ):
            answer = await c.post(path, data={"csrf": csrf})
            assert answer.status_code == 404, path
            assert "webhook-secret" not in answer.text
    assert (await delivery(desk, b)).state is OutboxState.dead
    hook = await hook_of(desk, b.webhook.id)
    assert hook.active and hook.previous_until is None
    assert await entries(desk, "webhook.replay") == []


async def test_a_new_endpoint_and_a_rotated_secret_are_shown_once(desk: Desk) -> None:
    org = desk.a
    async with browser(desk, org, "admin") as (c, csrf):
        bad = await c.post("/webhooks", data={"csrf": csrf, "url": "ftp://cases.example"})
        assert bad.status_code == 400 and "A webhook URL starts with https://." in bad.text
        answer = await c.post("/webhooks", data={"csrf": csrf, "url": "https://cases.example/in"})
        assert answer.status_code == 200
        shown = SECRET.search(answer.text)
        assert shown is not None
        async with desk.sessions() as s:
            query = select(Webhook).where(Webhook.url == "https://cases.example/in")
            hook = (await s.execute(query)).scalar_one()
        assert hook.org_id == org.org.id
        assert hook.get(desk.vault, "secret_enc") == shown.group(1).encode()
        assert shown.group(1) not in (await c.get("/webhooks")).text

        rotated = await c.post(f"/webhooks/{hook.id}/rotate", data={"csrf": csrf, "days": "7"})
        fresh = SECRET.search(rotated.text)
        assert fresh is not None and fresh.group(1) != shown.group(1)
        hook = await hook_of(desk, hook.id)
        assert hook.get(desk.vault, "secret_enc") == fresh.group(1).encode()
        assert webhook_secrets.signing_secrets(desk.vault, hook, datetime.now(UTC)) == [
            fresh.group(1).encode(),
            shown.group(1).encode(),
        ]
        assert hook.previous_until is not None

        paused = await c.post(f"/webhooks/{hook.id}/pause", data={"csrf": csrf})
        assert paused.headers["location"] == "/webhooks?notice=paused"
        assert not (await hook_of(desk, hook.id)).active
        await c.post(f"/webhooks/{hook.id}/resume", data={"csrf": csrf})
        assert (await hook_of(desk, hook.id)).active
    for action, count in (("webhook.add", 1), ("webhook.rotate", 1), ("webhook.update", 2)):
        found = await entries(desk, action)
        assert [e.target for e in found] == [str(hook.id)] * count, action
        assert all(e.org_id == org.org.id for e in found)


async def test_the_audit_log_lists_the_own_entries_and_verifies_the_chain(desk: Desk) -> None:
    async with browser(desk, desk.b, "admin"):
        pass  # bravo's admin logs in: an entry of another organisation
    [theirs] = [e for e in await entries(desk, "auth.login") if e.org_id == desk.b.org.id]
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        page = await c.get("/audit")
        assert page.status_code == 200 and 'href="/audit"' in page.text
        assert 'data-action="auth.login"' in page.text and "admin-alpha" in page.text
        assert "The chain is" not in page.text
        intact = await c.get("/audit?verify=1")
        assert "The chain is intact" in intact.text
        # Its own entries numbered 1..n, newest first: no global seq, so no gap where bravo's are.
        own = [e for e in await entries(desk, "auth.login") if e.org_id == desk.a.org.id]
        numbers = [int(n) for n in re.findall(r'data-seq="(\d+)"', page.text)]
        assert numbers == list(range(len(numbers), 0, -1)) and own[-1].seq > len(numbers)
        async with transaction(desk.sessions) as s:  # bravo's login entry altered
            await s.execute(
                update(AuditEntry).where(AuditEntry.seq == theirs.seq).values(action="x")
            )
        broken = await c.get("/audit?verify=1")
        assert "The chain is broken: an entry was altered" in broken.text
        assert "The chain is broken at entry" not in broken.text  # not where: not alpha's
        async with transaction(desk.sessions) as s:  # now alpha's first entry too
            await s.execute(update(AuditEntry).where(AuditEntry.seq == 1).values(action="x"))
        broken = await c.get("/audit?verify=1")
        assert "The chain is broken at entry 1:" in broken.text


async def test_the_desk_pages_are_translated_and_arabic_is_right_to_left(desk: Desk) -> None:
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        c.headers["accept-language"] = "ar"
        pages = [await c.get(path) for path in ("/roster", "/webhooks", "/audit")]
    for page in pages:
        assert page.status_code == 200 and '<html lang="ar" dir="rtl">' in page.text
        for english in ("On duty", "Webhooks", "Audit log", "Given up", "Replay"):
            assert english not in page.text, english


async def test_the_keys_page_lists_every_version_for_admins_only(desk: Desk) -> None:
    assert desk.a.org.public_key is not None
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        page = await c.get("/keys")
    assert page.status_code == 200
    assert fingerprint(desk.a.org.public_key) in page.text and "Current key" in page.text
    assert 'class="newkey stack" hidden' in page.text  # nothing to submit without the script
    assert 'name="' not in page.text.split('class="newkey')[1].split("</form>")[0]
    for role in ("responder", "observer"):
        async with browser(desk, desk.a, role) as (c, _csrf):
            refused = await c.get("/keys")
            queue = await c.get("/")
        assert refused.status_code == 303 and refused.headers["location"] == "/"
        assert 'href="/keys"' not in queue.text
