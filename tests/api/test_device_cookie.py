"""Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): the
browser a responder logged in from keeps logging in while guesses from many addresses hold
the account's backstop, or spend the address's budget behind a shared NAT. The cookie changes
throttling only, names one account, and a cookie guessing too often is locked out itself.
Guesses at the account from the browser's own address still count there (test_lockout)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from api.deps import COOKIE, get_now
from core import desk_sessions
from core.models import ThrottleHit
from core.throttle import Limits, Throttle
from tests.api.conftest import CHEAP, Desk
from tests.api.test_auth import creds, login
from tests.api.test_dashboard import NONCE
from tests.api.test_lockout import ATTACKER, BACKSTOP, PER_ADDRESS, RESPONDER, client

DEVICE = "__Host-amparo_device"  # spelt out: browsers keep it under this name
PER_DEVICE = 5  # wrong guesses one device cookie may make in 15 minutes
ME = "/api/v1/auth/me"
STEP = timedelta(seconds=30)  # a TOTP step: each code works once


@pytest.fixture
def clock(desk: Desk) -> Iterator[list[datetime]]:
    """The app's clock, which a test moves: logins need a fresh TOTP step each."""
    now = [datetime.now(UTC)]
    desk.app.dependency_overrides[get_now] = lambda: now[0]
    yield now
    desk.app.dependency_overrides.pop(get_now)


def right(desk: Desk, clock: list[datetime], role: str = "responder") -> dict[str, str]:
    return creds(desk, role, at=clock[0])


def wrong(desk: Desk, role: str = "responder") -> dict[str, str]:
    return creds(desk, role) | {"password": "Winter2026!"}


async def trip_backstop(desk: Desk, role: str = "responder") -> None:
    """Guesses at the account from many addresses, each under its own limit, until the
    account's backstop refuses everyone without a device cookie (some guesses may have come
    before: the attack goes on until it does)."""
    codes: list[int] = []
    for n in range(BACKSTOP // PER_ADDRESS):
        async with client(desk, f"10.0.{n}.1") as attacker:
            codes += [
                (await login(attacker, wrong(desk, role))).status_code for _ in range(PER_ADDRESS)
            ]
    assert set(codes) <= {401, 429} and codes.count(401) <= BACKSTOP
    async with client(desk, "10.1.0.1") as fresh:
        assert (await login(fresh, wrong(desk, role))).status_code == 429


def set_cookies(answer: httpx.Response, name: str) -> list[str]:
    return [c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{name}=")]


def holding(desk: Desk, ip: str, value: str) -> httpx.AsyncClient:
    c = client(desk, ip)
    c.cookies.set(DEVICE, value, domain="desk.test")
    return c


async def form(c: httpx.AsyncClient, body: dict[str, str]) -> httpx.Response:
    nonce = NONCE.search((await c.get("/login")).text)
    assert nonce is not None
    return await c.post("/login", data=body | {"nonce": nonce.group(1)})


async def test_a_known_browser_logs_in_while_the_backstop_holds(
    desk: Desk, clock: list[datetime]
) -> None:
    async with client(desk, RESPONDER) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 200
        assert browser.cookies.get(DEVICE)
        await trip_backstop(desk)
        clock[0] += STEP
        async with client(desk, RESPONDER) as elsewhere:  # same address, no device cookie
            assert (await login(elsewhere, right(desk, clock))).status_code == 429
        again = await login(browser, right(desk, clock))
        assert again.status_code == 200
        assert (await browser.get(ME)).json()["username"] == creds(desk)["username"]


async def test_a_known_browser_logs_in_through_the_form_while_the_backstop_holds(
    desk: Desk, clock: list[datetime]
) -> None:
    async with client(desk, RESPONDER) as browser:
        first = await form(browser, right(desk, clock))
        assert first.status_code == 303 and browser.cookies.get(DEVICE)
        await trip_backstop(desk)
        clock[0] += STEP
        async with client(desk, RESPONDER) as elsewhere:
            assert (await form(elsewhere, right(desk, clock))).status_code == 429
        again = await form(browser, right(desk, clock))
        assert again.status_code == 303 and again.headers["location"] == "/"
        assert (await browser.get("/")).status_code == 200


async def test_a_known_browser_behind_the_attackers_address_logs_in(
    desk: Desk, clock: list[datetime]
) -> None:
    """One NAT for the desk's office and a guesser: the address's budget is spent."""
    spray = [(org, role) for org in (desk.a, desk.b) for role in org.responders]
    spray.remove((desk.a, "responder"))
    desk.app.state.limits = Limits(login_address=Throttle(len(spray), 900))
    async with client(desk, RESPONDER) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 200
        device = browser.cookies[DEVICE]
    async with client(desk, ATTACKER) as attacker:
        for org, role in spray:  # one guess at every other account
            body = wrong(desk) | {"username": org.responders[role].username}
            assert (await login(attacker, body)).status_code == 401
        clock[0] += STEP
        assert (await login(attacker, right(desk, clock))).status_code == 429
    async with holding(desk, ATTACKER, device) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 200


async def test_a_device_cookie_counts_only_for_its_own_account(
    desk: Desk, clock: list[datetime]
) -> None:
    async with client(desk, RESPONDER) as browser:  # the admin's browser
        assert (await login(browser, right(desk, clock, "admin"))).status_code == 200
        admins = browser.cookies[DEVICE]
    async with holding(desk, ATTACKER, admins) as attacker:  # guessing the responder with it
        codes = [(await login(attacker, wrong(desk))).status_code for _ in range(PER_ADDRESS + 1)]
    assert codes == [401] * PER_ADDRESS + [429]
    await trip_backstop(desk)
    clock[0] += STEP
    async with holding(desk, RESPONDER, admins) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 429
        assert (await login(browser, right(desk, clock, "admin"))).status_code == 200


async def test_a_tampered_or_expired_device_cookie_is_no_cookie(
    desk: Desk, clock: list[datetime]
) -> None:
    async with client(desk, RESPONDER) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 200
        device = browser.cookies[DEVICE]
    async with client(desk, RESPONDER) as browser:
        assert (await login(browser, right(desk, clock, "admin"))).status_code == 200
        admins = browser.cookies[DEVICE]
    version, responder_id, expires, nonce, mac = device.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    forged = [
        ".".join((version, responder_id, expires, nonce, flipped)),  # the MAC
        ".".join((version, responder_id, str(int(expires) + 86400), nonce, mac)),  # expiry
        ".".join((version, responder_id, expires, "0" * 32, mac)),  # another device's key
        ".".join((version, *admins.split(".")[1:])),  # the admin's, for the responder's name
        device + ".",
        "",
    ]
    await trip_backstop(desk)
    clock[0] += STEP
    for value in forged:
        async with holding(desk, RESPONDER, value) as browser:
            assert (await login(browser, right(desk, clock))).status_code == 429, value
    clock[0] += timedelta(days=31)  # past the cookie's expiry; a new backstop, a new window
    await trip_backstop(desk)
    async with holding(desk, RESPONDER, device) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 429


async def test_a_password_change_voids_the_old_device_cookies(
    desk: Desk, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_sessions, "hash_password", CHEAP.hash)  # a hundred guesses check it
    path, new = "/api/v1/auth/password", "a new and long password"
    async with client(desk, RESPONDER) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 200
        old = browser.cookies[DEVICE]
        changed = await browser.post(
            path, json={"current_password": creds(desk)["password"], "new_password": new}
        )
        assert changed.status_code == 200 and set_cookies(changed, DEVICE)
        renewed = browser.cookies[DEVICE]
    assert renewed != old
    await trip_backstop(desk)
    clock[0] += STEP
    body = right(desk, clock) | {"password": new}
    async with holding(desk, RESPONDER, old) as stale:
        assert (await login(stale, body)).status_code == 429
    async with holding(desk, RESPONDER, renewed) as browser:
        assert (await login(browser, body)).status_code == 200


async def test_too_many_wrong_guesses_lock_out_that_device_cookie(
    desk: Desk, clock: list[datetime]
) -> None:
    """A stolen device cookie guesses no faster from many addresses than from one:
    PER_DEVICE guesses, then it is refused for the window, even with the right password.
    The account is not locked: the responder still logs in elsewhere. Its guesses count
    neither per address nor towards the account's backstop."""
    async with client(desk, RESPONDER) as browser:
        assert (await login(browser, right(desk, clock))).status_code == 200
        device = browser.cookies[DEVICE]
    for n in range(PER_DEVICE):
        async with holding(desk, f"192.0.2.{n}", device) as thief:
            assert (await login(thief, wrong(desk))).status_code == 401
    async with desk.sessions() as s:
        query = select(ThrottleHit.scope, func.count()).group_by(ThrottleHit.scope)
        counted = dict((await s.execute(query)).all())
    assert counted == {"login_device": PER_DEVICE, "login_account_address": PER_DEVICE}
    clock[0] += STEP
    async with holding(desk, "192.0.2.99", device) as thief:
        refused = await login(thief, right(desk, clock))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    async with client(desk, RESPONDER) as elsewhere:
        assert (await login(elsewhere, right(desk, clock))).status_code == 200


@pytest.mark.parametrize("via", ["api", "form"])
async def test_the_device_cookie_is_a_host_only_secure_strict_cookie(
    desk: Desk, clock: list[datetime], via: str
) -> None:
    async with client(desk, RESPONDER) as browser:
        failed = await (login if via == "api" else form)(browser, wrong(desk))
        answer = await (login if via == "api" else form)(browser, right(desk, clock))
    assert not set_cookies(failed, DEVICE)
    assert answer.status_code in (200, 303)
    assert answer.headers["set-cookie"].startswith(f"{COOKIE}=")  # the session's still first
    [cookie] = set_cookies(answer, DEVICE)
    attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert DEVICE.startswith("__Host-")
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= set(attributes)
    assert not any(a.startswith("domain") for a in attributes)  # __Host-: no Domain
    max_age = next(int(a.split("=")[1]) for a in attributes if a.startswith("max-age="))
    assert timedelta(days=1) < timedelta(seconds=max_age) <= timedelta(days=90)
    value = cookie.split(";")[0].split("=", 1)[1]
    assert creds(desk)["username"] not in value and creds(desk)["password"] not in value
