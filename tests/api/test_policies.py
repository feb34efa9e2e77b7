"""Escalation policies are validated, and one default per organisation."""

from __future__ import annotations

from sqlalchemy import update

from core import alerts
from core.db import transaction
from core.models import Defender, DefenderStatus
from tests.api.conftest import Desk


async def test_it_validates_and_saves_policies(desk: Desk) -> None:
    async with await desk.client(desk.a, "admin") as c:
        made = await c.post(
            "/api/v1/policies",
            json={"name": "fast", "steps": {"grace_s": 300, "repeat_s": 120}, "is_default": True},
        )
        never_repeats = await c.post(
            "/api/v1/policies", json={"name": "x", "steps": {"repeat_s": 0}}
        )
        negative = await c.post("/api/v1/policies", json={"name": "y", "steps": {"grace_s": -1}})
        duplicate = await c.post("/api/v1/policies", json={"name": "fast", "steps": {}})
        listed = (await c.get("/api/v1/policies")).json()
    assert made.status_code == 201 and made.json()["steps"]["repeat_s"] == 120
    assert (never_repeats.status_code, negative.status_code) == (422, 422)
    assert duplicate.status_code == 409
    assert [p["name"] for p in listed if p["is_default"]] == ["fast"]


async def grace_of(desk: Desk) -> int:
    """The grace the organisation A's defender (who has no policy of their own) now gets."""
    assert desk.a.defender is not None
    async with desk.sessions() as s:
        d = await s.get(Defender, desk.a.defender.id)
        assert d is not None and d.policy_id is None
        return (await alerts.policy_for(s, d)).grace_s


async def test_the_default_policy_stays_while_defenders_follow_it(desk: Desk) -> None:
    """Defenders without a policy of their own follow the default: deleting it, or unsetting
    its flag, would silently slow their escalation down to the built-in ladder."""
    assert desk.a.policy is not None
    old = desk.a.policy.id
    async with await desk.client(desk.a, "admin") as c:
        c.headers["Accept-Language"] = "es"
        made = await c.post(
            "/api/v1/policies",
            json={"name": "fast", "steps": {"grace_s": 60}, "is_default": True},
        )
        assert made.status_code == 201, made.text
        fast = made.json()["id"]
        assert await grace_of(desk) == 60
        gone = await c.delete(f"/api/v1/policies/{fast}")
        unset = await c.put(
            f"/api/v1/policies/{fast}",
            json={"name": "fast", "steps": {"grace_s": 60}, "is_default": False},
        )
        assert (gone.status_code, unset.status_code) == (409, 409)
        assert gone.json() == unset.json()
        assert "otra política" in gone.json()["detail"]  # translated, and says what to do
        assert await grace_of(desk) == 60
        assert (await c.get(f"/api/v1/policies/{fast}")).json()["is_default"] is True

        # The way to change the default: make another policy the default. Then the old one
        # is an ordinary policy, and may go.
        back = await c.put(
            f"/api/v1/policies/{old}",
            json={"name": "default", "steps": {"grace_s": 120}, "is_default": True},
        )
        assert back.status_code == 200 and back.json()["is_default"] is True
        assert await grace_of(desk) == 120
        assert (await c.delete(f"/api/v1/policies/{fast}")).status_code == 204
    # Organisation B is untouched, and its default may go once nobody follows it.
    assert desk.b.defender is not None and desk.b.policy is not None
    async with transaction(desk.sessions) as s:
        await s.execute(
            update(Defender)
            .where(Defender.id == desk.b.defender.id)
            .values(status=DefenderStatus.deleted)
        )
    async with await desk.client(desk.b, "admin") as c:
        assert (await c.delete(f"/api/v1/policies/{desk.b.policy.id}")).status_code == 204


async def test_replacing_a_policy_without_its_flag_keeps_the_flag(desk: Desk) -> None:
    assert desk.a.policy is not None
    async with await desk.client(desk.a, "admin") as c:
        kept = await c.put(
            f"/api/v1/policies/{desk.a.policy.id}",
            json={"name": "default", "steps": {"grace_s": 300}},
        )
        other = (await c.post("/api/v1/policies", json={"name": "slow", "steps": {}})).json()
        plain = await c.put(
            f"/api/v1/policies/{other['id']}", json={"name": "slower", "steps": {"grace_s": 1800}}
        )
        listed = (await c.get("/api/v1/policies")).json()
    assert kept.status_code == 200 and kept.json()["is_default"] is True
    assert other["is_default"] is False and plain.json()["is_default"] is False
    assert [p["name"] for p in listed if p["is_default"]] == ["default"]
    assert await grace_of(desk) == 300


async def test_an_edited_policy_reaches_the_check_ins_already_armed(desk: Desk) -> None:
    """The desk shortens its default grace: a routine armed before takes it now, not at the
    defender's next check-in (the sweep re-arms with the row's own copy)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from core import checkins
    from core.models import CheckIn

    assert desk.a.defender is not None and desk.a.policy is not None
    async with transaction(desk.sessions) as s:
        d = await s.get(Defender, desk.a.defender.id)
        assert d is not None
        now = datetime.now(UTC)
        await checkins.arm_timer(s, defender=d, due_at=now + timedelta(hours=2), now=now)
    async with await desk.client(desk.a, "admin") as c:
        edited = await c.put(
            f"/api/v1/policies/{desk.a.policy.id}",
            json={"name": "default", "steps": {"grace_s": 120}, "is_default": True},
        )
    assert edited.status_code == 200, edited.text
    async with desk.sessions() as s:
        (grace,) = (await s.execute(select(CheckIn.grace_s))).scalars().all()
    assert grace == 120
