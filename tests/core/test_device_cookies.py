"""A device cookie names one live account, until it expires or the password changes; any
other value is no cookie (core.device_cookies)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import device_cookies
from core.accounts import create_org
from core.crypto import Keyring, Vault
from core.db import transaction
from core.models import Responder, Role

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)


async def accounts(sessions: Sessions, vault: Vault) -> tuple[Responder, Responder]:
    async with transaction(sessions) as s:
        org = await create_org(s, vault, "alpha", "a long organisation passphrase", fast_kdf=True)
        made = [
            Responder(
                id=uuid.uuid4(),
                org_id=org.id,
                username=name,
                role=Role.responder,
                password_hash=f"$argon2id$v=19$m=64,t=1,p=1$salt-{name}$hash",
            )
            for name in ("ana", "bruno")
        ]
        s.add_all(made)
    return made[0], made[1]


async def device(sessions: Sessions, vault: Vault, value: str, username: str) -> str | None:
    async with sessions() as s:
        return await device_cookies.device_for(s, vault, value, username, NOW)


async def test_it_names_the_account_it_was_issued_for(sessions: Sessions, vault: Vault) -> None:
    ana, bruno = await accounts(sessions, vault)
    value = device_cookies.issue(vault, ana, NOW)
    key = await device(sessions, vault, value, "ana")
    assert key is not None and key in value and "ana" not in value
    assert await device(sessions, vault, value, "bruno") is None
    assert await device(sessions, vault, value, "ANA") is None  # as authenticate: exact
    other = device_cookies.issue(vault, ana, NOW)
    assert await device(sessions, vault, other, "ana") not in (None, key)  # one key a device


async def test_it_ignores_altered_and_malformed_values(sessions: Sessions, vault: Vault) -> None:
    ana, bruno = await accounts(sessions, vault)
    value = device_cookies.issue(vault, ana, NOW)
    version, rid, expires, nonce, mac = value.split(".")
    forged = [
        ".".join((version, bruno.id.hex, expires, nonce, mac)),
        ".".join((version, str(ana.id), expires, nonce, mac)),  # another spelling of the id
        ".".join((version, rid, expires + "0", nonce, mac)),
        ".".join((version, rid, "0" + expires, nonce, mac)),
        ".".join((version, rid, expires, nonce.upper(), mac)),
        ".".join((version, rid, expires, nonce, mac[::-1])),
        ".".join(("v2", rid, expires, nonce, mac)),
        ".".join((version, uuid.uuid4().hex, expires, nonce, mac)),
        value + ".x",
        "garbage",
        "",
        "v1.ä.1.2.3",
    ]
    for bad in forged:
        assert await device(sessions, vault, bad, "ana") is None, bad
    stranger = Vault(Keyring.generate())  # another server's keys
    assert await device(sessions, stranger, value, "ana") is None


async def test_it_expires(sessions: Sessions, vault: Vault) -> None:
    ana, _bruno = await accounts(sessions, vault)
    old = device_cookies.issue(vault, ana, NOW - device_cookies.LIFETIME)
    nearly = device_cookies.issue(vault, ana, NOW - device_cookies.LIFETIME + timedelta(minutes=1))
    assert await device(sessions, vault, old, "ana") is None
    assert await device(sessions, vault, nearly, "ana") is not None


async def test_a_new_password_or_a_disabled_account_voids_it(
    sessions: Sessions, vault: Vault
) -> None:
    ana, bruno = await accounts(sessions, vault)
    values = [device_cookies.issue(vault, r, NOW) for r in (ana, bruno)]
    async with transaction(sessions) as s:
        await s.execute(
            update(Responder).where(Responder.id == ana.id).values(password_hash="$argon2id$new")
        )
        await s.execute(update(Responder).where(Responder.id == bruno.id).values(active=False))
    assert await device(sessions, vault, values[0], "ana") is None
    assert await device(sessions, vault, values[1], "bruno") is None
