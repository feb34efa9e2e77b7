"""Found in review of the desk side in chat and of trusted contacts (both backends)."""

from __future__ import annotations

from sqlalchemy import select

from core import alerts, desk_chat
from core.db import transaction
from core.models import (
    AlertKind,
    ChannelAddress,
    Consent,
    Responder,
    Role,
    TrustedContact,
)
from tests.flows.conftest import CANCEL_PIN, ONBOARDING, Chat, Desk, Pick, onboard
from tests.flows.test_desk_chat import REFUSAL, Group, link_code, responder


async def test_a_removed_admins_group_code_links_nothing(desk: Desk) -> None:
    real = Group(desk)
    admin = await responder(desk, Role.admin)
    async with transaction(desk.sessions) as s:
        code0, _ = await desk_chat.group_code(
            s, desk.vault, org_id=desk.org.id, created_by=admin.id, actor="a", now=desk.clock.now
        )
    assert "responder group" in await real.say("1", f"/desk {code0}")
    rogue = await responder(desk, Role.admin)
    async with transaction(desk.sessions) as s:
        code, _ = await desk_chat.group_code(
            s, desk.vault, org_id=desk.org.id, created_by=rogue.id, actor="r", now=desk.clock.now
        )
    async with transaction(desk.sessions) as s:  # the desk removes the rogue admin
        row = await s.get(Responder, rogue.id)
        assert row is not None
        row.active = False
    theirs = Group(desk, address="-100666")
    answer = await theirs.say("666", f"/desk {code}")
    assert answer == REFUSAL, answer  # the removed admin's group takes nothing


async def _contact_of(desk: Desk, defender: Chat, contact: Chat) -> None:
    await defender.say("/settings")
    await defender.say(Pick("contacts"))
    await defender.say(Pick("add"))
    await defender.say(CANCEL_PIN)
    shown = await defender.say("friend")
    code = shown[0].text.split("in person or by phone: ")[1].split("\n")[0]
    assert "accept" in (await contact.text(code)).lower()
    await contact.say(Pick("accept"))


async def test_a_defender_who_is_a_contact_can_stop_being_one(desk: Desk) -> None:
    alice = await onboard(desk, "alice")
    bob = await onboard(desk, "bob")
    await _contact_of(desk, alice, bob)
    async with desk.sessions() as s:
        c = (await s.execute(select(TrustedContact))).scalar_one()
        assert c.consent is Consent.confirmed
    said = await bob.text("/stop")
    async with desk.sessions() as s:
        c = (await s.execute(select(TrustedContact))).scalar_one()
    assert c.consent is Consent.revoked, said


async def test_a_responders_chat_does_not_become_a_defenders_nor_gets_their_duress_page(
    desk: Desk,
) -> None:
    """A chat linked as a responder's is refused as a defender's (the invite stays unused);
    and where both already share one chat, a duress page never goes to it."""
    r = await responder(desk, Role.responder)
    chat = Chat(desk, "7777", "en", channel="console")
    assert "now linked" in await chat.text(f"/desk {await link_code(desk, r)}")
    code = await desk.invite()
    assert "private service" in await chat.text(code)  # as a wrong code
    assert await chat.defender() is None
    other = Chat(desk, "8888", "en", channel="console")
    assert "Welcome" in await other.text(code)  # the code is still good elsewhere

    for said in ONBOARDING:  # that defender, whose chat was made a responder's before the fix
        await other.say(said)
    defender = await other.defender()
    assert defender is not None
    async with transaction(desk.sessions) as s:
        own = (
            await s.execute(
                select(ChannelAddress).where(ChannelAddress.defender_id == defender.id)
            )
        ).scalar_one()
        own.responder_id = r.id
    await other.received()
    async with transaction(desk.sessions) as s:
        found = await s.get(type(defender), defender.id)
        assert found is not None
        await alerts.raise_alert(
            s, desk.vault, defender=found, kind=AlertKind.duress, now=desk.clock.now
        )
    assert [m.text for m in await other.received()] == []


async def test_a_chat_linked_for_one_desk_is_not_taken_by_another(desk: Desk) -> None:
    import uuid as _uuid

    from core import recipients
    from core.models import Organisation

    async with transaction(desk.sessions) as s:
        other = Organisation(id=_uuid.uuid4(), name="Other")
        s.add(other)
    mine = await responder(desk, Role.responder)  # a coordinator, on duty at both desks
    theirs = await responder(desk, Role.responder, other.id)
    chat = Chat(desk, "31337", "en", channel="telegram")
    assert "now linked" in await chat.text(f"/desk {await link_code(desk, mine)}")
    assert "private service" in await chat.text(f"/desk {await link_code(desk, theirs)}")
    async with desk.sessions() as s:
        paged = await recipients.desk(s, desk.org.id)
    assert [p.person for p in paged] == [mine.id]  # desk A still pages its coordinator


async def test_a_contact_removed_under_duress_who_accepts_later_stays_unseen(desk: Desk) -> None:
    from tests.flows.conftest import DURESS_PIN

    alice = await onboard(desk, "alice")
    await alice.say("/settings")
    await alice.say(Pick("contacts"))
    await alice.say(Pick("add"))
    await alice.say(CANCEL_PIN)
    shown = await alice.say("sister")
    code = shown[0].text.split("in person or by phone: ")[1].split("\n")[0]
    await alice.say("/settings")
    await alice.say(Pick("contacts"))
    await alice.say(Pick("remove"))
    await alice.say(DURESS_PIN)
    assert await alice.text("sister") == "Removed."  # the captor believes it
    sister = desk.chat("sister")
    await sister.say(code)
    await sister.say(Pick("accept"))
    later = [m.text for m in await alice.received()]
    assert later == [], later


async def test_buttons_posted_before_a_supergroup_move_still_work(desk: Desk) -> None:
    import dataclasses

    from core import callbacks, notices
    from tests.flows.test_desk_chat import open_panic
    from tests.flows.test_desk_group_notices import member, ready

    old = await ready(desk)
    await member(desk, "5151")
    alert = await open_panic(desk)
    async with transaction(desk.sessions) as s:  # what the Telegram adapter issues when posting
        ack, _safe = await callbacks.issue(
            s,
            desk.vault,
            chat=callbacks.Chat(
                "telegram", old.address, desk.vault.address_index("telegram", old.address)
            ),
            choices=[notices.group_choice(v, alert.id) for v in ("ack", "safe")],
            now=desk.clock.now,
        )
    new_id = "-1009876543210"
    await desk.engine.handle(
        dataclasses.replace(old.inbound("", None, None), sender=None, moved_to=new_id)
    )
    new = Group(desk, address=new_id)
    answer = await new.say("5151", callback=ack)  # the same message, now in the supergroup
    assert "acknowledged" in answer, answer


async def test_a_desk_whose_group_another_desk_links_finds_it_in_its_audit_log(
    desk: Desk,
) -> None:
    """A group belongs to one organisation; the one that loses it is told in its own log."""
    import uuid as _uuid

    from core.models import AuditEntry, Organisation

    async with transaction(desk.sessions) as s:
        other = Organisation(id=_uuid.uuid4(), name="Other desk")
        s.add(other)
    group = Group(desk)
    for org_id, member in ((desk.org.id, "1"), (other.id, "2")):
        admin = await responder(desk, Role.admin, org_id)
        async with transaction(desk.sessions) as s:
            code, _ = await desk_chat.group_code(
                s, desk.vault, org_id=org_id, created_by=admin.id, actor="a", now=desk.clock.now
            )
        assert "responder group" in await group.say(member, f"/desk {code}")
    async with desk.sessions() as s:
        logged = (await s.execute(select(AuditEntry.org_id, AuditEntry.action))).all()
    assert (desk.org.id, "desk_group.taken") in logged
    assert (other.id, "desk_group.taken") not in logged
