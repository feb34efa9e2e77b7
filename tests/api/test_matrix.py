"""Every route against every role, and with another organisation's ids (SECURITY.md R18)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import api_tokens, rollcalls
from core.db import transaction
from core.models import Defender, Handoff, Organisation
from tests.api.conftest import Desk, Org

A, R, OB, T = "admin", "responder", "observer", "token"
POLICY = {"name": "night shift", "steps": {"grace_s": 600}}
BAD_KEY = {"public_key": "AAAA", "protected_private_key": "AAAA"}

# (method, path, body, roles allowed). Written out by hand: the code's own scope table is
# what is under test, so it must not be reused here.
ROUTES: list[tuple[str, str, dict[str, Any] | None, set[str]]] = [
    ("GET", "/alerts", None, {A, R, OB, T}),
    ("GET", "/alerts/{alert}", None, {A, R, OB, T}),
    ("POST", "/alerts/{alert}/acknowledge", None, {A, R, T}),
    ("POST", "/alerts/{alert}/assign", {"responder_id": None}, {A, R, T}),
    ("POST", "/alerts/{alert}/notes", {"text": "called her sister"}, {A, R, T}),
    ("POST", "/alerts/{alert}/keep-open", None, {A, R, T}),
    ("POST", "/alerts/by-dedup/{dedup}/acknowledge", None, {A, R, T}),
    ("POST", "/alerts/{alert}/resolve", {"outcome": "safe"}, {A, R, T}),
    ("POST", "/alerts/by-dedup/{dedup}/resolve", {"outcome": "safe"}, {A, R, T}),
    ("POST", "/alerts/{alert}/reopen", None, {A, R, T}),
    ("GET", "/defenders", None, {A, R, OB, T}),
    ("GET", "/handoffs", None, {A, R, OB, T}),
    ("POST", "/defenders/{defender}/handoff", {"to_desk": "x", "defender_agreed": True}, {A}),
    ("POST", "/handoffs/{handoff_in}/decline", None, {A}),
    ("POST", "/handoffs/{handoff_in}/accept", None, {A}),
    ("POST", "/handoffs/{handoff_out}/withdraw", None, {A}),
    ("GET", "/defenders/{defender}", None, {A, R, OB, T}),
    ("POST", "/defenders/{defender}/pause", None, {A, R, T}),
    ("POST", "/defenders/{defender}/resume", None, {A, R, T}),
    ("POST", "/defenders/{defender}/restore", None, {A, R, T}),
    ("PUT", "/defenders/{defender}/policy", {"policy_id": None}, {A, R, T}),
    ("POST", "/invites", {}, {A, R, T}),
    ("GET", "/invites", None, {A, R, OB, T}),
    ("DELETE", "/invites/{invite}", None, {A, R, T}),
    ("POST", "/broadcasts", {"text": "everyone check in now"}, {A, R, T}),
    ("GET", "/broadcasts", None, {A, R, OB, T}),
    ("POST", "/rollcalls", {"text": "check in now", "closes_in_minutes": 30}, {A, R, T}),
    ("GET", "/rollcalls", None, {A, R, OB, T}),
    ("GET", "/rollcalls/{rollcall}", None, {A, R, OB, T}),
    ("POST", "/rollcalls/{rollcall}/close", None, {A, R, T}),
    ("GET", "/reports", None, {A, R, OB, T}),
    ("GET", "/reports/export", None, {A, R, T}),
    ("GET", "/reports/{report}/sealed", None, {A, R, OB, T}),
    ("GET", "/reports/{report}/evidence", None, {A, R, OB, T}),
    ("PATCH", "/reports/{report}/review", {"verification": "likely"}, {A, R, T}),
    ("GET", "/policies", None, {A, R, OB, T}),
    ("POST", "/policies", POLICY, {A, T}),
    ("GET", "/policies/{policy}", None, {A, R, OB, T}),
    ("PUT", "/policies/{policy}", POLICY | {"name": "renamed"}, {A, T}),
    ("GET", "/roster", None, {A, R, OB, T}),
    ("PUT", "/roster/me", {"on_duty": True}, {A, R}),
    ("GET", "/responders", None, {A}),
    ("PATCH", "/responders/{responder}", {"on_duty": True}, {A}),
    ("POST", "/responders/me/link-code", None, {A, R}),
    ("POST", "/desk-group/link-code", None, {A}),
    ("GET", "/desk-group", None, {A}),
    ("PATCH", "/desk-group", {"language": "es"}, {A}),
    ("DELETE", "/desk-group", None, {A}),
    ("GET", "/org/keys", None, {A, R, OB, T}),
    ("POST", "/org/keys", BAD_KEY, {A}),
    ("GET", "/tokens", None, {A}),
    ("POST", "/tokens", {"name": "x", "scopes": ["alerts:read"]}, {A}),
    ("DELETE", "/tokens/{token}", None, {A}),
    ("GET", "/webhooks", None, {A}),
    ("POST", "/webhooks", {"url": "https://cases.example/amparo"}, {A}),
    ("PATCH", "/webhooks/{webhook}", {"active": True}, {A}),
    ("POST", "/webhooks/{webhook}/rotate", {"overlap_hours": 1}, {A}),
    ("GET", "/webhooks/{webhook}/deliveries", None, {A}),
    ("POST", "/webhooks/{webhook}/deliveries/{delivery}/replay", None, {A}),
    ("GET", "/audit", None, {A}),
    ("GET", "/audit/verify", None, {A}),
    ("DELETE", "/policies/{policy}", None, {A, T}),
    ("DELETE", "/webhooks/{webhook}", None, {A}),  # last: the routes above use it
]


async def ids(desk: Desk, org: Org) -> dict[str, str]:
    async with transaction(desk.sessions) as s:
        spare, _plain = await api_tokens.create_token(
            s, org_id=org.org.id, name="spare", scopes=["alerts:read"], now=desk_now()
        )
        rollcall = await rollcalls.start(
            s,
            desk.vault,
            org_id=org.org.id,
            text="everyone check in now",
            closes_in=timedelta(hours=1),
            actor="test",
            now=desk_now(),
        )
    assert org.alert and org.defender and org.report and org.policy and org.invite
    handoff_in, handoff_out = await handoffs_of(desk, org)
    return {
        "alert": str(org.alert.id),
        "dedup": org.alert.dedup_key,
        "defender": str(org.defender.id),
        "report": str(org.report.id),
        "policy": str(org.policy.id),
        "invite": str(org.invite.id),
        "responder": str(org.responders["observer"].id),
        "token": str(spare.id),
        "rollcall": str(rollcall.id),
        "webhook": str(org.webhook.id),  # type: ignore[union-attr]
        "delivery": str(org.dead.id),  # type: ignore[union-attr]
        "handoff_in": str(handoff_in),
        "handoff_out": str(handoff_out),
    }


async def handoffs_of(desk: Desk, org: Org) -> tuple[uuid.UUID, uuid.UUID]:
    """A hand-off offered to ``org`` and one offered by it, both with a third desk (so that
    neither is the other test organisation's)."""
    assert org.defender is not None
    third = Organisation(id=uuid.uuid4(), name=f"third-{uuid.uuid4().hex[:8]}")
    theirs = Defender(
        id=uuid.uuid4(), org_id=third.id, handle=f"h-{uuid.uuid4().hex[:8]}", status="active"
    )
    ins = Handoff(
        id=uuid.uuid4(),
        defender_id=theirs.id,
        from_org_id=third.id,
        to_org_id=org.org.id,
        offered_by="test",
    )
    outs = Handoff(
        id=uuid.uuid4(),
        defender_id=org.defender.id,
        from_org_id=org.org.id,
        to_org_id=third.id,
        offered_by="test",
    )
    async with transaction(desk.sessions) as s:
        s.add(third)
        await s.flush()
        s.add(theirs)
        await s.flush()
        s.add_all([ins, outs])
    return ins.id, outs.id


def desk_now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("role", [A, R, OB, T])
async def test_it_grants_each_route_only_to_the_roles_that_hold_it(desk: Desk, role: str) -> None:
    own = await ids(desk, desk.a)
    problems = []
    async with await desk.client(desk.a, role) as c:
        for method, path, body, allowed in ROUTES:
            answer = await c.request(method, "/api/v1" + path.format(**own), json=body)
            denied = answer.status_code in (401, 403)
            if answer.status_code >= 500 or denied == (role in allowed):
                problems.append(f"{method} {path}: {answer.status_code}")
    assert problems == []


async def test_it_answers_404_to_another_organisations_ids(desk: Desk) -> None:
    foreign = await ids(desk, desk.b)
    problems = []
    for role in (A, T):
        async with await desk.client(desk.a, role) as c:
            for method, path, body, allowed in ROUTES:
                if "{" not in path or role not in allowed:
                    continue
                answer = await c.request(method, "/api/v1" + path.format(**foreign), json=body)
                if answer.status_code != 404:
                    problems.append(f"{role} {method} {path}: {answer.status_code}")
    assert problems == []
    async with desk.anonymous() as c:  # and organisation B saw nothing change
        c.headers["Authorization"] = f"Bearer {desk.b.token}"
        alert = (await c.get(f"/api/v1/alerts/{foreign['alert']}")).json()
        assert (alert["state"], alert["assigned_to"], alert["notes"]) == ("triggered", None, [])


async def test_it_refuses_another_organisations_ids_in_the_body(desk: Desk) -> None:
    assert desk.a.alert and desk.a.defender and desk.b.policy
    async with await desk.client(desk.a, A) as c:
        assign = await c.post(
            f"/api/v1/alerts/{desk.a.alert.id}/assign",
            json={"responder_id": str(desk.b.responders["responder"].id)},
        )
        policy = await c.put(
            f"/api/v1/defenders/{desk.a.defender.id}/policy",
            json={"policy_id": str(desk.b.policy.id)},
        )
    assert (assign.status_code, policy.status_code) == (404, 404)


async def test_it_asks_anonymous_callers_to_log_in_everywhere(desk: Desk) -> None:
    own = await ids(desk, desk.a)
    async with desk.anonymous() as c:
        codes = {
            (m, p): (await c.request(m, "/api/v1" + p.format(**own), json=b)).status_code
            for m, p, b, _allowed in ROUTES
        }
    assert set(codes.values()) == {401}


async def test_it_lets_every_responder_but_no_token_use_the_auth_routes(desk: Desk) -> None:
    answers = {}
    for role in (A, R, OB, T):
        async with await desk.client(desk.a, role) as c:
            me = await c.get("/api/v1/auth/me")
            out = await c.post("/api/v1/auth/logout")
            after = await c.get("/api/v1/auth/me")
            answers[role] = (me.status_code, out.status_code, after.status_code)
    async with desk.anonymous() as c:
        answers["anonymous"] = ((await c.get("/api/v1/auth/me")).status_code, 0, 0)
    assert answers == {
        A: (200, 204, 401),
        R: (200, 204, 401),
        OB: (200, 204, 401),
        T: (404, 204, 404),  # a token is nobody, and logging out does not revoke it
        "anonymous": (401, 0, 0),
    }


def test_every_desk_route_is_in_the_matrix(desk: Desk) -> None:
    """A route added later without a line above would go untested for its roles and for
    other organisations' ids: the app's own list of routes must match the matrix."""
    import re

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path)

    served = {
        (method.upper(), shape(path.removeprefix("/api/v1")))
        for path, operations in desk.app.openapi()["paths"].items()
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/auth/")  # everyone's
        for method in operations
    }
    tested = {(method, shape(path)) for method, path, _body, _allowed in ROUTES}
    assert served - tested == set()  # served, never checked
    assert tested - served == set()  # checked, no longer served
    assert len(served) > 40
