"""Responders in chat: linking a private chat, the desk's responder group, acting from it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select

from core import alerts, callbacks, desk_chat, notices, recipients, webhooks
from core.db import transaction
from core.messages import Inbound
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    AlertState,
    AuditEntry,
    ChannelAddress,
    Defender,
    DefenderStatus,
    DeskGroup,
    Organisation,
    OutboxMessage,
    Responder,
    Role,
    SeenInbound,
)
from tests.flows.conftest import Chat, Desk

REFUSAL = "Hello. This is a private service. If you were given a code, send it here."
NOT_YOU = "Sorry, only the desk's responders can do that."
GROUP = "-1001234567890"


@dataclass
class Group:
    desk: Desk
    channel: str = "telegram"
    address: str = GROUP
    seen: set[uuid.UUID] = field(default_factory=set)

    def inbound(self, sender: str, text: str | None, callback: str | None) -> Inbound:
        return Inbound(
            channel=self.channel,
            address=self.address,
            message_id=uuid.uuid4().hex,
            received_at=self.desk.clock.now,
            text=text,
            language="en",
            private=False,
            group=True,
            sender=sender,
            callback=callback,
        )

    async def say(
        self, sender: str, text: str | None = None, *, callback: str | None = None
    ) -> str:
        """What the bot answered in the group (every new message there)."""
        await self.desk.engine.handle(self.inbound(sender, text, callback))
        return await self.heard()

    async def heard(self) -> str:
        chat = Chat(self.desk, self.address, "en", channel=self.channel, seen=self.seen)
        return "\n\n".join(m.text for m in await chat.received())


async def responder(desk: Desk, role: Role, org_id: uuid.UUID | None = None) -> Responder:
    async with transaction(desk.sessions) as s:
        r = Responder(
            id=uuid.uuid4(),
            org_id=org_id or desk.org.id,
            username=f"{role.value}-{uuid.uuid4().hex[:6]}",
            role=role,
            password_hash="x",
            on_duty=True,
        )
        s.add(r)
    return r


async def link_code(desk: Desk, r: Responder) -> str:
    async with transaction(desk.sessions) as s:
        code, _expires = await desk_chat.responder_code(
            s, desk.vault, responder=r, actor=f"responder:{r.id}", now=desk.clock.now
        )
    return code


async def linked(
    desk: Desk, role: Role, chat_id: str, org_id: uuid.UUID | None = None
) -> Responder:
    r = await responder(desk, role, org_id)
    chat = Chat(desk, chat_id, "en", channel="telegram")
    assert "now linked" in await chat.text(f"/desk {await link_code(desk, r)}")
    return r


async def group_code(desk: Desk, org_id: uuid.UUID | None = None) -> str:
    async with transaction(desk.sessions) as s:
        code, _expires = await desk_chat.group_code(
            s,
            desk.vault,
            org_id=org_id or desk.org.id,
            created_by=None,
            actor="test",
            now=desk.clock.now,
        )
    return code


async def open_panic(desk: Desk, org_id: uuid.UUID | None = None) -> Alert:
    async with transaction(desk.sessions) as s:
        d = Defender(
            id=uuid.uuid4(),
            org_id=org_id or desk.org.id,
            handle=f"calm-otter-{uuid.uuid4().hex[:4]}",
            status=DefenderStatus.active,
        )
        s.add(d)
        await s.flush()
        return await alerts.raise_alert(
            s, desk.vault, defender=d, kind=AlertKind.panic, now=desk.clock.now
        )


async def fresh(desk: Desk, alert: Alert) -> Alert:
    async with desk.sessions() as s:
        found = await s.get(Alert, alert.id)
        assert found is not None
        return found


async def audit_actions(desk: Desk) -> list[str]:
    async with desk.sessions() as s:
        rows = await s.execute(select(AuditEntry.action).order_by(AuditEntry.seq))
        return [a for (a,) in rows]


async def count(desk: Desk, model: type) -> int:
    async with desk.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


# --- a responder's private chat ----------------------------------------------------------------


@pytest.mark.parametrize(("channel", "typed"), [("telegram", "/desk {}"), ("signal", "desk {}")])
async def test_a_responder_links_a_private_chat_with_a_code(
    desk: Desk, channel: str, typed: str
) -> None:
    r = await responder(desk, Role.responder)
    code = await link_code(desk, r)
    chat = Chat(desk, "5001", "en", channel=channel)
    assert "now linked" in await chat.text(typed.format(code.lower()))
    async with desk.sessions() as s:
        address = (
            await s.execute(select(ChannelAddress).where(ChannelAddress.responder_id == r.id))
        ).scalar_one()
        assert address.channel == channel
        assert address.get_text(desk.vault, "value_enc") == "5001"  # encrypted, found by index
        assert address.value_enc != b"5001"
        found = await recipients.desk(s, desk.org.id)
    assert [(w.role, w.person, w.address_id) for w in found] == [("responder", r.id, address.id)]
    assert (await audit_actions(desk))[-2:] == ["responder.link_code", "responder.chat_link"]


async def test_a_wrong_expired_or_used_code_gets_the_invite_refusal(desk: Desk) -> None:
    r = await responder(desk, Role.admin)
    wrong_invite = await Chat(desk, "6000", "en", channel="telegram").text("abcd2345")
    assert wrong_invite == REFUSAL
    chat = Chat(desk, "6001", "en", channel="telegram")
    assert await chat.text("/desk ABCD2345") == REFUSAL  # wrong

    old = await link_code(desk, r)
    new = await link_code(desk, r)  # one live code per responder: the old one died
    assert await chat.text(f"/desk {old}") == REFUSAL
    desk.clock.advance(minutes=16)
    assert await chat.text(f"/desk {new}") == REFUSAL  # expired

    code = await link_code(desk, r)
    assert "now linked" in await chat.text(f"/desk {code}")
    other = Chat(desk, "6002", "en", channel="telegram")
    assert await other.text(f"/desk {code}") == REFUSAL  # used
    async with desk.sessions() as s:
        owners = await s.execute(
            select(ChannelAddress.responder_id).where(ChannelAddress.responder_id.is_not(None))
        )
        assert owners.scalars().all() == [r.id]


async def test_a_defender_cannot_link_their_chat_as_a_responder(desk: Desk) -> None:
    from tests.flows.conftest import onboard

    chat = await onboard(desk, "7001")
    r = await responder(desk, Role.responder)
    code = await link_code(desk, r)
    assert "now linked" not in await chat.text(f"/desk {code}")
    outsider = Chat(desk, "7002", "en", channel="console")
    assert "now linked" in await outsider.text(f"/desk {code}")  # the code was not spent


# --- the responder group -----------------------------------------------------------------------


async def test_a_group_code_binds_the_group_and_relinking_replaces_it(desk: Desk) -> None:
    group = Group(desk)
    assert await group.say("1", "/desk@amparo_bot WRONG234") == REFUSAL
    assert await count(desk, DeskGroup) == 0
    answer = await group.say("1", f"/desk@amparo_bot {await group_code(desk)}")
    assert "responder group" in answer
    async with desk.sessions() as s:
        first = (await s.execute(select(DeskGroup))).scalar_one()
        address = await s.get(ChannelAddress, first.address_id)
        assert address is not None and address.get_text(desk.vault, "value_enc") == GROUP
        assert (await recipients.desk_group(s, desk.org.id)) is not None

    other = Group(desk, address="-1009999")
    assert "responder group" in await other.say("2", f"/desk {await group_code(desk)}")
    async with desk.sessions() as s:
        rows = (await s.execute(select(DeskGroup))).scalars().all()
        assert len(rows) == 1 and rows[0].address_id != first.address_id
        assert await s.get(ChannelAddress, first.address_id) is None  # the old chat id is gone
    assert (await audit_actions(desk)).count("desk_group.link") == 2


async def test_other_group_talk_is_ignored_and_never_stored(desk: Desk) -> None:
    group = Group(desk)
    await group.say("1", f"/desk {await group_code(desk)}")
    before = (await count(desk, SeenInbound), await count(desk, ChannelAddress))
    for text in ("hello all", "ack", "ack 12", "/start", "SAFE", None):
        assert await group.say("1", text) == ""
    assert (await count(desk, SeenInbound), await count(desk, ChannelAddress)) == before
    unlinked = Group(desk, address="-100555")
    assert await unlinked.say("1", "ACK ABCDEF") == ""  # commands in other groups: silence


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_a_responder_acknowledges_and_resolves_from_the_group(
    desk: Desk, channel: str
) -> None:
    address = GROUP if channel == "telegram" else "group.c29tZQ=="
    group = Group(desk, channel=channel, address=address)
    await group.say("1", f"/desk {await group_code(desk)}")
    r = await responder(desk, Role.responder)
    me = Chat(desk, "4242", "en", channel=channel)
    assert "now linked" in await me.text(f"desk {await link_code(desk, r)}")
    async with transaction(desk.sessions) as s:
        await webhooks.add(s, desk.vault, org_id=desk.org.id, url="http://desk.invalid/h")
    alert = await open_panic(desk)
    code = notices.short_code(alert.id)
    assert "EMERGENCY: calm-otter-" in await group.heard()  # panic: posted to the group at once

    answer = await group.say("4242", f"ack {code.lower()}")
    assert answer.startswith(f"{r.username} acknowledged alert {code} (calm-otter-")
    acked = await fresh(desk, alert)
    assert acked.state is AlertState.acknowledged and acked.acknowledged_by == r.id
    assert await group.say("4242", f"SAFE {code}") == (
        f"{r.username} resolved alert {code} ({answer.split('(')[1].split(')')[0]}) as safe."
    )
    done = await fresh(desk, alert)
    assert (done.state, done.outcome) == (AlertState.resolved, "safe")
    async with desk.sessions() as s:
        events = (
            await s.execute(
                select(AlertEvent.kind, AlertEvent.actor)
                .where(AlertEvent.alert_id == alert.id)
                .order_by(AlertEvent.id)
            )
        ).all()
        hooks = [
            json.loads(row.get(desk.vault, "payload_enc") or b"{}")["type"]
            for row in (
                await s.execute(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
            ).scalars()
        ]
    assert ("acknowledged", f"responder:{r.id}") in events
    assert ("resolved", f"responder:{r.id}") in events
    assert hooks == ["alert.triggered", "alert.acknowledged", "alert.resolved"]
    assert (await audit_actions(desk))[-2:] == ["alert.acknowledge", "alert.resolve"]
    assert await group.say("4242", f"ack {code}") == "No open alert has that code."


async def test_observers_strangers_and_other_desks_are_refused(desk: Desk) -> None:
    group = Group(desk)
    await group.say("1", f"/desk {await group_code(desk)}")
    async with transaction(desk.sessions) as s:
        elsewhere = Organisation(id=uuid.uuid4(), name="Elsewhere")
        s.add(elsewhere)
    demoted = await linked(desk, Role.responder, "801")
    async with transaction(desk.sessions) as s:  # linked, then made an observer
        row = await s.get(Responder, demoted.id)
        assert row is not None
        row.role = Role.observer
    await linked(desk, Role.responder, "802", org_id=elsewhere.id)
    alert = await open_panic(desk)
    code = notices.short_code(alert.id)
    await group.heard()
    for sender in ("801", "802", "803"):  # observer, another desk's responder, a stranger
        assert await group.say(sender, f"ACK {code}") == NOT_YOU
        assert await group.say(sender, f"SAFE {code}") == NOT_YOU
    assert (await fresh(desk, alert)).state is AlertState.triggered
    assert "alert.acknowledge" not in await audit_actions(desk)


async def test_buttons_are_checked_for_the_group_and_the_presser(desk: Desk) -> None:
    group = Group(desk)
    await group.say("1", f"/desk {await group_code(desk)}")
    r = await linked(desk, Role.admin, "901")
    observer = await responder(desk, Role.observer)
    observer_chat = Chat(desk, "902", "en", channel="telegram")
    assert await observer_chat.text(f"/desk {await link_code(desk, observer)}") == REFUSAL
    alert = await open_panic(desk)
    await group.heard()
    index = desk.vault.address_index("telegram", GROUP)
    async with transaction(desk.sessions) as s:
        ack, safe = await callbacks.issue(
            s,
            desk.vault,
            chat=callbacks.Chat("telegram", GROUP, index),
            choices=[notices.group_choice(v, alert.id) for v in ("ack", "safe")],
            now=desk.clock.now,
        )
        (foreign,) = await callbacks.issue(
            s,
            desk.vault,
            chat=callbacks.Chat(
                "telegram", "901", desk.vault.address_index("telegram", "901")
            ),  # sent to a private chat
            choices=[notices.group_choice("ack", alert.id)],
            now=desk.clock.now,
        )
    assert await group.say("902", callback=ack) == NOT_YOU  # an observer: token left intact
    assert await group.say("903", callback=ack) == NOT_YOU  # a stranger
    assert await group.say("901", callback=foreign) == "This button no longer works."
    assert await group.say("901", callback="garbage" * 3) == "This button no longer works."
    assert (await fresh(desk, alert)).state is AlertState.triggered
    answer = await group.say("901", callback=ack)
    assert answer.startswith(f"{r.username} acknowledged alert {notices.short_code(alert.id)}")
    assert (await fresh(desk, alert)).state is AlertState.acknowledged
    assert await group.say("901", callback=safe) == "This button no longer works."  # siblings
    async with desk.sessions() as s:  # the answer carries a fresh Resolve button
        last = (
            await s.execute(select(OutboxMessage).order_by(OutboxMessage.created_at.desc()))
        ).scalars()
        choices = [
            json.loads(row.get(desk.vault, "payload_enc") or b"{}").get("choices") for row in last
        ]
    assert [notices.group_choice("safe", alert.id), "Resolve: safe"] in [
        c[0] for c in choices if c
    ]
