"""Report exports are limited per actor and per organisation (R21): the limit was per actor
only, so each API token an organisation made (or each responder) brought a budget of its
own, and a handful of tokens exported the whole report base many times over the hour."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from core import api_tokens
from core.db import transaction
from core.throttle import Limits, Throttle
from tests.api.conftest import Desk, Org


async def token(desk: Desk, org: Org) -> httpx.AsyncClient:
    """Another token of ``org``, allowed to export."""
    async with transaction(desk.sessions) as s:
        _row, plaintext = await api_tokens.create_token(
            s, org_id=org.org.id, name="another system", scopes=["reports:export"],
            now=datetime.now(UTC),
        )  # fmt: skip
    c = desk.anonymous()
    c.headers["Authorization"] = f"Bearer {plaintext}"
    return c


async def export(c: httpx.AsyncClient) -> int:
    return (await c.get("/api/v1/reports/export")).status_code


async def test_an_organisations_tokens_share_its_export_budget(desk: Desk) -> None:
    desk.app.state.limits = Limits(export=Throttle(2, 3600), export_org=Throttle(3, 3600))
    one, two, three = [await token(desk, desk.a) for _ in range(3)]
    async with one, two, three, await desk.client(desk.b, "token") as elsewhere:
        codes = [await export(c) for c in (one, two, one, two, three)]
        assert codes == [200, 200, 200, 429, 429]  # the fourth: over the organisation's 3
        assert await export(one) == 429  # over its own 2 too, and a refusal counts nothing
        assert [await export(elsewhere) for _ in range(2)] == [200, 200]  # another org's


async def test_an_actor_over_its_own_limit_spends_none_of_the_organisations(
    desk: Desk,
) -> None:
    desk.app.state.limits = Limits(export=Throttle(1, 3600), export_org=Throttle(2, 3600))
    one, two = [await token(desk, desk.a) for _ in range(2)]
    async with one, two:
        assert [await export(c) for c in (one, one, one, two)] == [200, 429, 429, 200]


async def test_the_default_organisation_budget_binds_before_its_tokens_add_up(
    desk: Desk,
) -> None:
    limits = Limits()
    assert limits.export_org.limit < 4 * limits.export.limit  # four tokens would be more
    assert limits.export_org.window_s >= limits.export.window_s
