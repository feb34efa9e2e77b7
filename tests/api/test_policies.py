"""Escalation policies are validated, and one default per organisation."""

from __future__ import annotations

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
