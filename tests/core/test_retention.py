"""Retention (SECURITY.md R25): time-travel past each limit, the rows are gone; before it, kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import retention
from core.crypto import Vault
from core.db import transaction
from core.defenders import delete_data, new_address
from core.desk_defenders import health_of
from core.escalation import Policy
from core.models import (
    Alert,
    AlertKind,
    AlertState,
    CallbackToken,
    ChannelAddress,
    CheckIn,
    CheckInKind,
    CheckInState,
    Conversation,
    Defender,
    DeskSession,
    InviteCode,
    Organisation,
    OutboxMessage,
    OutboxState,
    Responder,
    Role,
    TrustedContact,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=40)


async def _count(sessions: async_sessionmaker[AsyncSession], model: type) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def _purge(sessions: async_sessionmaker[AsyncSession], now: datetime) -> dict[str, int]:
    async with transaction(sessions) as s:
        return await retention.purge(s, now=now)


async def _org(sessions: async_sessionmaker[AsyncSession]) -> tuple[uuid.UUID, uuid.UUID]:
    async with transaction(sessions) as s:
        org = Organisation(name="Desk")
        s.add(org)
        await s.flush()
        defender = Defender(org_id=org.id, handle=f"calm-heron-{uuid.uuid4().hex[:6]}")
        s.add(defender)
        await s.flush()
        return org.id, defender.id


def _alert(org: uuid.UUID, defender: uuid.UUID, state: AlertState) -> Alert:
    key = uuid.uuid4().hex
    return Alert(
        org_id=org,
        defender_id=defender,
        kind=AlertKind.panic,
        priority=0,
        state=state,
        dedup_key=key,
        open_key=None if state == AlertState.resolved else key,
        policy_snapshot=Policy().to_json(),
        location_sealed=b"sealed-box",
        resolved_at=NOW if state == AlertState.resolved else None,
    )


async def test_it_forgets_a_location_once_the_alert_ends(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    org, defender = await _org(sessions)
    async with transaction(sessions) as s:
        ended = _alert(org, defender, AlertState.resolved)
        still_open = _alert(org, defender, AlertState.acknowledged)
        s.add_all([ended, still_open])
    assert (await _purge(sessions, NOW))["alert_locations"] == 1
    async with sessions() as s:
        assert (await s.get(Alert, ended.id)).location_sealed is None  # type: ignore[union-attr]
        kept = await s.get(Alert, still_open.id)
        assert kept is not None and kept.location_sealed == b"sealed-box"


class _Recorder:
    """Stands in for the session: keeps the purge's statements instead of running them."""

    def __init__(self, bind: Any) -> None:
        self.statements: list[Any] = []
        self.bind = bind

    def get_bind(self) -> Any:
        return self.bind

    async def execute(self, statement: Any) -> Any:
        self.statements.append(statement)
        return SimpleNamespace(rowcount=0)


GROWING = (
    "alerts",
    "outbox",
    "trusted_contacts",
    "channel_addresses",
    "checkins",
)  # with the desk's use


async def test_it_reads_what_it_purges_not_whole_tables(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Alerts are kept for good, finished outbox rows for 30 days: a purge that read them all
    would grow with the desk's history (a second at a million alerts, every ten minutes,
    holding SQLite's write lock), and one scan of the outbox per address it deletes."""
    async with sessions() as s:
        recorder = _Recorder(s.get_bind())
        await retention.purge(cast(AsyncSession, recorder), now=NOW)
        conn = await s.connection()
        if conn.dialect.name != "sqlite":  # PostgreSQL plans from statistics: the indexes
            found = await conn.execute(text("SELECT indexname, indexdef FROM pg_indexes"))
            indexes = dict(found.all())
            assert "WHERE (location_sealed IS NOT NULL)" in indexes["ix_alerts_located"]
            for name in ("ix_outbox_ended", "ix_outbox_address_id", "ix_outbox_webhook_id"):
                assert name in indexes
            assert "ix_trusted_contacts_address_id" in indexes
            return
        plans = []
        for statement in recorder.statements:
            compiled = statement.compile(
                dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
            )
            params = tuple(compiled.params[n] for n in compiled.positiontup or ())
            plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
            plans.append(" | ".join(r[3] for r in plan))
    assert len(plans) == 8  # the broadcasts: a table of its own, not a growing one above
    assert "INDEX ix_alerts_located" in plans[0]
    assert "INDEX ix_outbox_ended" in plans[1]
    scans = [p for p in plans for t in GROWING if f"SCAN {t} " in p + " " or f"SCAN {t}|" in p]
    assert scans == [], scans


async def test_five_check_ins_leave_no_history_a_day_later(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """R24: only the defender's last check-in time is kept; finished timers are not a diary."""
    org, defender = await _org(sessions)
    days = [NOW - timedelta(days=n, hours=1) for n in range(1, 6)]
    async with transaction(sessions) as s:
        for due, state in zip(
            days, [CheckInState.met] * 4 + [CheckInState.cancelled], strict=True
        ):
            s.add(_checkin(defender, due, state))
        s.add(_checkin(defender, NOW - timedelta(hours=2), CheckInState.met))  # today's
        s.add(_checkin(defender, NOW - timedelta(days=3), CheckInState.missed))  # escalating
        s.add(_alert(org, defender, AlertState.triggered))  # the alert it opened
        s.add(_checkin(defender, NOW + timedelta(hours=5), CheckInState.armed))
    assert (await _purge(sessions, NOW))["checkins"] == 5
    async with sessions() as s:
        left = {c.state for c in (await s.execute(select(CheckIn))).scalars()}
    assert left == {CheckInState.met, CheckInState.missed, CheckInState.armed}


async def test_a_missed_check_in_goes_once_no_alert_of_its_defender_is_open(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A missed one-off timer stays "missed": "I'm safe" meets live check-ins only. Once the
    defender's alert has ended it goes as a met one does, a day after it was due: kept for
    good, it was a diary of the deadlines they missed (R24), and the desk's check-in health
    said "missed" long after they were found safe. While an alert of theirs is open, it stays."""
    org, defender = await _org(sessions)
    async with transaction(sessions) as s:
        other = Defender(id=uuid.uuid4(), org_id=org, handle="still-heron-7")
        s.add(other)
        await s.flush()
        s.add(_checkin(defender, NOW - timedelta(days=3), CheckInState.missed))
        s.add(_alert(org, defender, AlertState.resolved))  # found safe
        s.add(_checkin(other.id, NOW - timedelta(days=3), CheckInState.missed))
        s.add(_alert(org, other.id, AlertState.acknowledged))  # still being worked
    assert (await _purge(sessions, NOW))["checkins"] == 1
    async with sessions() as s:
        left = [c.defender_id for c in (await s.execute(select(CheckIn))).scalars()]
        found = await s.get(Defender, defender)
        assert found is not None
        health = await health_of(s, found)
    assert left == [other.id] and health.state != "missed"


def _checkin(defender: uuid.UUID, due: datetime, state: CheckInState) -> CheckIn:
    return CheckIn(
        defender_id=defender, kind=CheckInKind.timer, due_at=due, next_action_at=due, state=state
    )


async def test_it_deletes_finished_outbox_rows_after_thirty_days(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    def row(state: OutboxState, created: datetime) -> OutboxMessage:
        return OutboxMessage(
            priority=1,
            channel="telegram",
            idempotency_key=uuid.uuid4().hex,
            state=state,
            created_at=created,
        )

    async with transaction(sessions) as s:
        s.add_all(
            [
                row(OutboxState.delivered, LONG_AGO),
                row(OutboxState.dead, LONG_AGO),
                row(OutboxState.failed, LONG_AGO),
                row(OutboxState.pending, LONG_AGO),  # never dropped while undelivered
                row(OutboxState.sending, LONG_AGO),
                row(OutboxState.delivered, NOW - timedelta(days=29)),
            ]
        )
    assert (await _purge(sessions, NOW))["outbox"] == 3
    async with sessions() as s:
        left = (await s.execute(select(OutboxMessage.state))).scalars().all()
    assert sorted(left) == sorted([OutboxState.pending, OutboxState.sending, "delivered"])


async def test_it_drops_ended_sessions_used_invites_and_old_button_tokens(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    org, _ = await _org(sessions)
    async with transaction(sessions) as s:
        who = Responder(org_id=org, username="ana", role=Role.responder, password_hash="x")
        s.add(who)
        await s.flush()

        def desk_session(expires: datetime, revoked: datetime | None = None) -> DeskSession:
            return DeskSession(
                token_hash=uuid.uuid4().bytes * 2,
                csrf_hash=uuid.uuid4().bytes * 2,
                responder_id=who.id,
                org_id=org,
                expires_at=expires,
                revoked_at=revoked,
            )

        def invite(**when: datetime) -> InviteCode:
            when.setdefault("expires_at", NOW + timedelta(days=3))
            return InviteCode(org_id=org, code_index=uuid.uuid4().bytes * 2, **when)

        s.add_all(
            [
                desk_session(NOW - timedelta(minutes=1)),
                desk_session(NOW + timedelta(hours=1), revoked=NOW - timedelta(minutes=5)),
                desk_session(NOW + timedelta(hours=1)),
                invite(used_at=LONG_AGO),
                invite(revoked_at=LONG_AGO),
                invite(expires_at=LONG_AGO),
                invite(used_at=NOW - timedelta(days=10)),  # the desk still lists it
                invite(),
                CallbackToken(
                    token_index=uuid.uuid4().bytes * 2,
                    chat_index=b"c" * 32,
                    keyboard=uuid.uuid4(),
                    choice="yes",
                    expires_at=NOW - timedelta(seconds=1),
                ),
                CallbackToken(
                    token_index=uuid.uuid4().bytes * 2,
                    chat_index=b"c" * 32,
                    keyboard=uuid.uuid4(),
                    choice="no",
                    expires_at=NOW + timedelta(hours=1),
                ),
            ]
        )
    done = await _purge(sessions, NOW)
    assert (done["sessions"], done["invites"], done["button_tokens"]) == (2, 3, 1)
    assert await _count(sessions, DeskSession) == 1
    assert await _count(sessions, InviteCode) == 2
    assert await _count(sessions, CallbackToken) == 1
    assert (await _purge(sessions, NOW)) == dict.fromkeys(done, 0)  # idempotent


async def test_it_deletes_the_address_of_a_deleted_defender_and_nothing_in_use(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    org, defender_id = await _org(sessions)
    day_ago = NOW - timedelta(days=2)
    async with transaction(sessions) as s:
        defender = await s.get(Defender, defender_id)
        assert defender is not None
        gone = new_address(vault, "telegram", "1001")
        gone.defender_id = defender_id
        contact = new_address(vault, "signal", "+15550001")
        talking = new_address(vault, "telegram", "1002")  # an invite code being typed
        queued = new_address(vault, "telegram", "1003")
        fresh = new_address(vault, "telegram", "1004")
        owned = new_address(vault, "signal", "+15550002")
        for a in (gone, contact, talking, queued, owned):
            a.created_at = day_ago
        s.add_all([gone, contact, talking, queued, fresh, owned])
        await s.flush()
        other = Defender(org_id=org, handle="swift-wren-1")
        s.add(other)
        await s.flush()
        owned.defender_id = other.id
        s.add(TrustedContact(defender_id=other.id, address_id=contact.id))
        s.add(Conversation(address_id=talking.id, flow="onboarding", state="code"))
        pending = OutboxMessage(
            priority=1, channel="telegram", idempotency_key="k", address_id=queued.id
        )
        s.add(pending)
        await delete_data(s, defender=defender)  # "delete my data": the address is detached
    async with sessions() as s:
        assert (await s.get(ChannelAddress, gone.id)) is not None
        assert (await s.get(ChannelAddress, gone.id)).defender_id is None  # type: ignore[union-attr]

    assert (await _purge(sessions, NOW))["addresses"] == 1
    async with sessions() as s:
        assert await s.get(ChannelAddress, gone.id) is None
        for kept in (contact, talking, queued, fresh, owned):
            assert await s.get(ChannelAddress, kept.id) is not None

    async with transaction(sessions) as s:  # once delivered, the queued address goes too
        row = await s.get(OutboxMessage, pending.id)
        assert row is not None
        row.state = OutboxState.delivered
    assert (await _purge(sessions, NOW))["addresses"] == 1
    async with sessions() as s:
        assert await s.get(ChannelAddress, queued.id) is None
        assert (await s.get(OutboxMessage, pending.id)).address_id is None  # type: ignore[union-attr]


async def test_a_deletion_forgets_the_buttons_sent_to_the_defenders_chats(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """A stored button names its chat by the address's blind index, and may outlast the
    address (an alert button stored before it was derived from the chat: 30 days): after
    "delete my data" nothing may still tie that chat to the service. A deletion forced with
    the duress PIN does the same (R8: an old button must answer as after a real one). Other
    defenders' chats keep theirs. The alert button itself is stored nowhere."""
    from core import callbacks
    from core.defenders import hide

    org, defender_id = await _org(sessions)
    async with transaction(sessions) as s:
        forced, other = (Defender(org_id=org, handle=f"swift-wren-{n}") for n in (2, 3))
        s.add_all([forced, other])
        await s.flush()
        addresses = []
        for n, owner in enumerate((defender_id, forced.id, other.id)):
            address = new_address(vault, "telegram", f"200{n}")
            address.defender_id = owner
            addresses.append(address)
        s.add_all(addresses)
        await s.flush()
        for address in addresses:
            await callbacks.issue(
                s,
                vault,
                chat=callbacks.Chat(address.channel, "?", address.blind_index),
                choices=["panic", "safe"],
                now=NOW,
            )
    async with transaction(sessions) as s:
        hidden = await s.get(Defender, forced.id)
        assert hidden is not None
        await hide(s, defender=hidden)
    async with transaction(sessions) as s:
        defender = await s.get(Defender, defender_id)
        assert defender is not None
        await delete_data(s, defender=defender)
    async with sessions() as s:
        left = (await s.execute(select(CallbackToken.chat_index))).scalars().all()
    assert left == [addresses[2].blind_index]  # its "safe": the alert button has no row
