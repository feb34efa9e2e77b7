"""Sliding-window limits kept in the database, keyed per account, address or responder (and,
for report exports, organisation: its actors' budgets do not add up).

There is deliberately no global key: throttling one account or one address never locks out
the others (SECURITY.md R19, R21), nor one organisation another. Nor can a few wrong
passwords lock a responder out: they count per account *and address* (five), so an adversary
who knows a login name throttles only their own address for it, while the responder still
logs in from theirs (OWASP's lockout advice, django-axes' username+address key). Two wider
limits stay: per address (spraying many accounts) and per account, far higher (guessing from
many addresses; Argon2id and TOTP already make each guess slow and nearly hopeless). A
browser holding a device cookie of the account (core.device_cookies) is spared those two,
the ones that guesses from elsewhere can trip, and counts against a limit of its own
instead.

The hits live in the shared database, so every API process counts the same attempts: running
N processes does not give an attacker N allowances. A key is stored as a digest, keyed by the
vault's blind-index key (usernames and addresses stay out of the table), and a hit is kept no
longer than its window. Each hit is its own short transaction: a failed login rolls its
request back, never the attempt it made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import ThrottleHit

Sessions = async_sessionmaker[AsyncSession]
# PostgreSQL: the two-key advisory locks (their key space is not the one-key form's that
# core.audit uses); this class, and the key's digest as the object.
_PG_LOCK_CLASS = 0x616D_7074  # b"ampt"


@dataclass
class Throttle:
    limit: int
    window_s: float
    scope: str = "throttle"  # Limits names each of its throttles after its field
    # A keyed digest (the vault's blind index): a plain hash of an IPv4 address or a username
    # is undone by trying them all. Without one (tests), SHA-256.
    keyer: Callable[[str, str], bytes] | None = None

    def _key(self, key: str) -> bytes:
        if self.keyer is not None:
            return self.keyer(f"throttle:{self.scope}", key)
        return hashlib.sha256(f"{self.scope}\0{key}".encode()).digest()

    def _since(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.window_s)

    async def _recent(self, session: AsyncSession, key: bytes, now: datetime) -> list[datetime]:
        query = (
            select(ThrottleHit.at)
            .where(
                ThrottleHit.scope == self.scope,
                ThrottleHit.key_hash == key,
                ThrottleHit.at > self._since(now),
            )
            .order_by(ThrottleHit.at)
        )
        return list((await session.execute(query)).scalars())

    async def blocked(self, sessions: Sessions, key: str, now: datetime) -> bool:
        async with sessions() as session:
            return len(await self._recent(session, self._key(key), now)) >= self.limit

    async def hit(self, sessions: Sessions, key: str, now: datetime) -> bool:
        """Count one event; False when the key had already reached its limit. Concurrent hits
        on one key are serialised (a write lock on SQLite, an advisory lock on PostgreSQL), so
        no number of processes lets more than ``limit`` through."""
        async with transaction(sessions) as session:
            return await self.hit_in(session, key, now)

    async def hit_in(self, session: AsyncSession, key: str, now: datetime) -> bool:
        """``hit`` inside the caller's transaction (the flow engine's: on SQLite it already
        holds the write lock, which a transaction of our own would wait for)."""
        digest = self._key(key)
        if session.get_bind().dialect.name == "postgresql":
            lock = int.from_bytes(digest[:4], "big", signed=True)
            await session.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_CLASS, lock)))
        # Expired hits go first; on SQLite this write also takes the database's write lock.
        await session.execute(
            delete(ThrottleHit).where(
                ThrottleHit.scope == self.scope, ThrottleHit.at <= self._since(now)
            )
        )
        if len(await self._recent(session, digest, now)) >= self.limit:
            return False
        session.add(ThrottleHit(scope=self.scope, key_hash=digest, at=now))
        return True

    async def blocked_in(self, session: AsyncSession, key: str, now: datetime) -> bool:
        return len(await self._recent(session, self._key(key), now)) >= self.limit

    async def retry_after(self, sessions: Sessions, key: str, now: datetime) -> int:
        async with sessions() as session:
            hits = await self._recent(session, self._key(key), now)
        if len(hits) < self.limit:
            return 0
        return max(1, int((hits[0] - self._since(now)).total_seconds()) + 1)

    async def forget(self, sessions: Sessions, key: str, at: datetime) -> None:
        """Take back the hit counted at ``at`` (an attempt that turned out not to be a guess)."""
        async with transaction(sessions) as session:
            await self.forget_in(session, key, at)

    async def forget_in(self, session: AsyncSession, key: str, at: datetime) -> None:
        """``forget`` inside the caller's transaction."""
        await session.execute(
            delete(ThrottleHit).where(
                ThrottleHit.scope == self.scope,
                ThrottleHit.key_hash == self._key(key),
                ThrottleHit.at == at,
            )
        )

    async def reset(self, sessions: Sessions, key: str) -> None:
        async with transaction(sessions) as session:
            await session.execute(
                delete(ThrottleHit).where(
                    ThrottleHit.scope == self.scope, ThrottleHit.key_hash == self._key(key)
                )
            )


Keyed = tuple[Throttle, str]


@dataclass
class Limits:
    """The desk API's limits; tests may build tighter ones."""

    # One account from one address: the lockout an attacker's guesses run into.
    login_account_address: Throttle = field(default_factory=lambda: Throttle(5, 15 * 60))
    # One address, whatever the accounts: spraying.
    login_address: Throttle = field(default_factory=lambda: Throttle(30, 15 * 60))
    # One account, whatever the addresses: the backstop against distributed guessing. It is
    # the only limit an attacker can trip for somebody else, hence its far higher ceiling.
    login_account: Throttle = field(default_factory=lambda: Throttle(100, 15 * 60))
    # One device cookie (core.device_cookies): a browser the account logged in from counts
    # here instead of per address and per account, which others' guesses can trip.
    login_device: Throttle = field(default_factory=lambda: Throttle(5, 15 * 60))
    # Report exports: one actor (a responder, an API token), and one organisation, whatever
    # its actors: an organisation's tokens (or responders) do not add up their budgets.
    export: Throttle = field(default_factory=lambda: Throttle(10, 60 * 60))
    export_org: Throttle = field(default_factory=lambda: Throttle(30, 60 * 60))
    invite: Throttle = field(default_factory=lambda: Throttle(30, 60 * 60))

    keyer: Callable[[str, str], bytes] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            throttle = getattr(self, f.name)
            if isinstance(throttle, Throttle):
                throttle.scope, throttle.keyer = f.name, self.keyer

    def export_of(self, actor: str, org: str) -> list[Keyed]:
        """An export counts against its actor first: an actor over its own limit spends
        nothing of the organisation's (``hit_each`` takes a refused attempt's hits back)."""
        return [(self.export, actor), (self.export_org, org)]

    def login(self, account: str, address: str) -> list[Keyed]:
        """The throttles a login attempt (or a guess at the current password) counts against,
        in the order they are hit: the address first, so that a throttled address spends no
        account's budget; the account's backstop last. Keys are digested (blind index) like
        every other, the pair's too."""
        return [
            (self.login_address, address),
            (self.login_account_address, f"{address}\0{account}"),  # no NUL in an address
            (self.login_account, account),
        ]

    def login_from_device(self, account: str, address: str, device: str) -> list[Keyed]:
        """The throttles an attempt presenting a valid device cookie of the account counts
        against: the account from this address still (a thief's guesses on the password
        page lock this address out of the account, device or not), and the device, which
        bounds a stolen cookie's guesses from any number of addresses."""
        return [
            (self.login_account_address, f"{address}\0{account}"),
            (self.login_device, device),
        ]


async def hit_each(sessions: Sessions, keyed: Sequence[Keyed], now: datetime) -> Keyed | None:
    """Count one attempt against each (throttle, key) in turn: None when all took it, else
    the first that refused, with the hits this attempt already made taken back (a refused
    attempt checks nothing, so it must not use up a budget: a responder refused by the
    account's backstop would otherwise use up their own address's budget meanwhile)."""
    counted: list[Keyed] = []
    for throttle, key in keyed:
        if not await throttle.hit(sessions, key, now):
            for done, done_key in counted:
                await done.forget(sessions, done_key, now)
            return throttle, key
        counted.append((throttle, key))
    return None
