"""The OpenAPI document tells a generated client how to sign in and what a refusal looks like."""

from __future__ import annotations

from typing import Any

from api.deps import COOKIE, CSRF_HEADER
from tests.api.conftest import Desk
from tests.api.test_matrix import OB, ROUTES

ERROR = "#/components/schemas/ApiError"


async def document(desk: Desk) -> dict[str, Any]:
    async with desk.anonymous() as c:
        answer = await c.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    schema: dict[str, Any] = answer.json()
    return schema


def operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = schema["paths"]["/api/v1" + path][method.lower()]
    return found


def shape(path: str) -> str:
    """A matrix path ("/alerts/{alert}") as the document names it ("/alerts/{alert_id}")."""
    names = {"{dedup}": "{dedup_key}", "{webhook}": "{hook_id}"}
    names |= {"{handoff_in}": "{handoff_id}", "{handoff_out}": "{handoff_id}"}
    for short, full in names.items():
        path = path.replace(short, full)
    for name in ("alert", "defender", "invite", "rollcall", "report", "policy", "responder"):
        path = path.replace("{" + name + "}", "{" + name + "_id}")
    return path.replace("{token}", "{token_id}").replace("{delivery}", "{delivery_id}")


async def test_it_names_the_api_token_and_the_session_cookie(desk: Desk) -> None:
    schema = await document(desk)
    schemes = schema["components"]["securitySchemes"]
    by_type = {(s["type"], s.get("scheme") or s.get("in")): s for s in schemes.values()}
    assert ("http", "bearer") in by_type
    assert by_type["apiKey", "cookie"]["name"] == COOKIE
    assert by_type["apiKey", "header"]["name"] == CSRF_HEADER
    bearer = next(n for n, s in schemes.items() if s.get("scheme") == "bearer")
    cookie = next(n for n, s in schemes.items() if s.get("in") == "cookie")
    csrf = next(n for n, s in schemes.items() if s.get("in") == "header")
    queue = operation(schema, "GET", "/alerts")
    assert {bearer: ["alerts:read"]} in queue["security"]
    assert {cookie: ["alerts:read"]} in queue["security"]
    # A write with the cookie needs the CSRF header as well; an admin route takes no token.
    ack = operation(schema, "POST", "/alerts/{alert_id}/acknowledge")
    assert {cookie: ["alerts:write"], csrf: []} in ack["security"]
    assert operation(schema, "GET", "/tokens")["security"] == [{cookie: ["org:admin"]}]
    assert "security" not in operation(schema, "POST", "/auth/login")


async def test_it_declares_the_401_403_and_404_each_route_can_answer(desk: Desk) -> None:
    schema = await document(desk)
    error = schema["components"]["schemas"]["ApiError"]
    assert error["required"] == ["detail"]
    assert set(error["properties"]) == {"detail", "missing_scope"}
    for method, path, _body, allowed in ROUTES:
        op = operation(schema, method, shape(path))
        responses = op["responses"]
        assert op["security"], (method, path)
        refusals = {"401"} | ({"403"} if OB not in allowed else set())
        refusals |= {"404"} if "{" in path else set()
        for status in refusals:
            content = responses.get(status, {}).get("content", {})
            assert content["application/json"]["schema"] == {"$ref": ERROR}, (method, path, status)


async def test_the_refusals_have_the_declared_body(desk: Desk) -> None:
    """What the API really answers fits the declared ApiError: a scope missing, a foreign id."""
    schema = await document(desk)
    fields = set(schema["components"]["schemas"]["ApiError"]["properties"])
    assert desk.b.alert is not None
    foreign = desk.b.alert.id
    async with await desk.client(desk.a, "observer") as c:
        refused = await c.post(f"/api/v1/alerts/{foreign}/acknowledge")
        unknown = await c.get(f"/api/v1/alerts/{foreign}")
    async with desk.anonymous() as c:
        stranger = await c.get("/api/v1/alerts")
    assert refused.status_code == 403
    assert refused.json()["missing_scope"] == "alerts:write"
    assert (unknown.status_code, stranger.status_code) == (404, 401)
    for answer in (refused, unknown, stranger):
        body = answer.json()
        assert "detail" in body and set(body) <= fields
        assert all(isinstance(v, str) for v in body.values())
