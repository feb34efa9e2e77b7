"""Nobody can lock a responder out of the desk by guessing their password (SECURITY.md R19,
R21; OWASP's lockout advice): wrong passwords and codes count per account *from an address*,
so the guesser's address is throttled and the responder logs in from theirs. Only the
account's backstop, far higher, is tripped from many addresses together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from amparo.serve import _config
from api import errors
from core.config import Settings
from core.i18n import gettext
from core.models import ThrottleHit
from core.throttle import Limits, Throttle
from tests.api.conftest import BASE, PASSWORD, Desk
from tests.api.test_auth import creds, login
from tests.api.test_dashboard import NONCE

ATTACKER, RESPONDER = "192.0.2.66", "198.51.100.4"
# Limits' defaults, spelt out: guesses per account from one address; per account from all.
PER_ADDRESS, BACKSTOP = 5, 100
ME = "/api/v1/auth/me"


def client(desk: Desk, ip: str, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=desk.app, client=(ip, 4000))
    return httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers)


def guesses(desk: Desk, n: int) -> list[dict[str, str]]:
    """Wrong passwords, and the right password with a wrong code: both are guesses."""
    wrong_password = creds(desk) | {"password": "Winter2026!"}
    wrong_code = creds(desk) | {"totp": "000000"}
    return [wrong_password if i % 2 else wrong_code for i in range(n)]


async def test_an_attacker_locks_out_only_their_own_address(desk: Desk) -> None:
    async with client(desk, ATTACKER, **{"Accept-Language": "es"}) as attacker:
        answers = [await login(attacker, body) for body in guesses(desk, PER_ADDRESS + 5)]
        assert [a.status_code for a in answers] == [401] * PER_ADDRESS + [429] * 5
        refused = answers[-1]
        assert refused.json()["detail"] == gettext("es")(errors.TOO_MANY)
        assert refused.json()["detail"] != errors.TOO_MANY
        assert int(refused.headers["retry-after"]) > 0
        async with client(desk, RESPONDER) as responder:  # the responder, on duty, elsewhere
            assert (await login(responder, creds(desk))).status_code == 200
            assert (await responder.get(ME)).json()["username"] == creds(desk)["username"]
        later = datetime.now(UTC) + timedelta(seconds=30)  # the right password, a fresh code
        still = await login(attacker, creds(desk, at=later))
        assert still.status_code == 429  # however right, while the address is throttled
        assert still.json()["detail"] == gettext("es")(errors.TOO_MANY)


async def test_the_responder_gets_in_through_the_login_form_too(desk: Desk) -> None:
    async def form(c: httpx.AsyncClient, body: dict[str, str]) -> httpx.Response:
        nonce = NONCE.search((await c.get("/login")).text)
        assert nonce is not None
        return await c.post("/login", data=body | {"nonce": nonce.group(1)})

    async with client(desk, ATTACKER, **{"Accept-Language": "pt-BR"}) as attacker:
        statuses = [(await form(attacker, b)).status_code for b in guesses(desk, PER_ADDRESS)]
        refused = await form(attacker, guesses(desk, 1)[0])
    assert statuses == [401] * PER_ADDRESS and refused.status_code == 429
    assert gettext("pt")(errors.TOO_MANY) in refused.text
    async with client(desk, RESPONDER) as responder:
        signed_in = await form(responder, creds(desk))
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"


async def test_behind_the_trusted_proxy_each_client_keeps_its_own_budget(desk: Desk) -> None:
    """In production every request comes from the TLS proxy: the address that counts is the
    one its X-Forwarded-For names (AMPARO_TRUSTED_PROXIES), as uvicorn is configured."""
    config = _config(desk.app, Settings(), None, None)  # trusts 127.0.0.1, the default
    config.load()
    transport = httpx.ASGITransport(app=config.loaded_app, client=("127.0.0.1", 4000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as proxy:
        relayed = {"X-Forwarded-For": ATTACKER}
        codes = [
            (await proxy.post("/api/v1/auth/login", json=body, headers=relayed)).status_code
            for body in guesses(desk, PER_ADDRESS + 1)
        ]
        relayed = {"X-Forwarded-For": RESPONDER}
        good = await proxy.post("/api/v1/auth/login", json=creds(desk), headers=relayed)
    assert codes == [401] * PER_ADDRESS + [429]
    assert good.status_code == 200


async def test_a_thief_guessing_the_current_password_locks_out_only_their_address(
    desk: Desk,
) -> None:
    path, new = "/api/v1/auth/password", "a new and long password"
    async with client(desk, ATTACKER) as thief:  # holding a stolen session
        assert (await login(thief, creds(desk))).status_code == 200
        for _ in range(PER_ADDRESS):
            wrong = await thief.post(path, json={"current_password": "x", "new_password": new})
            assert wrong.status_code == 400
        right = await thief.post(path, json={"current_password": PASSWORD, "new_password": new})
        assert right.status_code == 429
        later = datetime.now(UTC) + timedelta(seconds=30)  # a code of the next step, unused
        assert (await login(thief, creds(desk, at=later))).status_code == 429
    async with client(desk, RESPONDER) as responder:
        assert (await login(responder, creds(desk, at=later))).status_code == 200


async def test_the_accounts_backstop_trips_at_its_far_higher_ceiling(desk: Desk) -> None:
    """Guessing from many addresses at once: each address stays under its own limit, and the
    account's backstop stops the guessing at its ceiling, for every address."""
    per, ceiling = PER_ADDRESS, BACKSTOP
    codes = []
    for n in range(ceiling // per):
        async with client(desk, f"10.0.{n}.1") as attacker:
            codes += [(await login(attacker, body)).status_code for body in guesses(desk, per)]
    assert codes == [401] * ceiling
    async with client(desk, "10.1.0.1") as fresh:
        blocked = await login(fresh, guesses(desk, 1)[0])
    async with client(desk, RESPONDER) as responder:
        also = await login(responder, creds(desk))
        spared = await login(responder, creds(desk, "admin"))  # another account
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert also.status_code == 429 and spared.status_code == 200
    limits = Limits()  # the defaults these tests spell out
    assert (limits.login_account_address.limit, limits.login_account.limit) == (per, ceiling)
    assert ceiling >= 10 * per  # far higher: only a many-address attack trips it
    assert per < limits.login_address.limit  # one address may try a few accounts


async def test_an_attempt_refused_by_one_throttle_costs_nothing_in_the_others(
    desk: Desk,
) -> None:
    """A responder refused while the backstop holds does not use up their address's budget
    (nor their own account-and-address one) meanwhile."""
    desk.app.state.limits = Limits(
        login_account_address=Throttle(2, 900), login_account=Throttle(4, 900)
    )
    for n in range(2):
        async with client(desk, f"10.0.{n}.1") as attacker:
            codes = [(await login(attacker, body)).status_code for body in guesses(desk, 3)]
            assert codes == [401, 401, 429]
    async with client(desk, RESPONDER) as responder:
        for _ in range(5):
            assert (await login(responder, creds(desk))).status_code == 429
    async with desk.sessions() as s:
        query = select(ThrottleHit.scope, func.count()).group_by(ThrottleHit.scope)
        rows = dict((await s.execute(query)).all())
    assert rows == {"login_address": 4, "login_account_address": 4, "login_account": 4}
