"""Settings: every change that matters needs the PIN; the duress PIN changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from core.defenders import settings
from core.models import (
    Alert,
    AlertKind,
    ChannelAddress,
    CheckIn,
    CheckInKind,
    CheckInState,
    Defender,
    DefenderStatus,
    TrustedContact,
)
from core.security import verify_pin
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Desk, Pick, onboard, run_dialog


async def test_it_changes_a_pin_only_with_the_old_one(desk: Desk) -> None:
    alice = await onboard(desk)
    await run_dialog(
        alice,
        [
            ("/settings", "Settings: what would you like to change?"),
            (Pick("pins"), "Send your current PIN."),
            ("5555", "That PIN is not right."),
            (CANCEL_PIN, "Which PIN do you want to change?"),
            (Pick("cancel"), "Send the new PIN"),
            (DURESS_PIN, "Your two PINs must be different."),
            ("24680", "again to confirm"),
            ("24680", "PIN changed."),
        ],
    )
    defender = await alice.defender()
    assert defender is not None and defender.cancel_pin_hash is not None
    assert verify_pin(defender.cancel_pin_hash, "24680", desk.vault.keyring.pepper)


async def test_it_pretends_to_change_a_pin_under_duress(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/settings", Pick("pins"), DURESS_PIN, Pick("cancel"), "5827"):
        await alice.say(said)
    assert "PIN changed." in await alice.text("5827")
    defender = await alice.defender()
    assert defender is not None and defender.cancel_pin_hash is not None
    assert verify_pin(defender.cancel_pin_hash, CANCEL_PIN, desk.vault.keyring.pepper)
    async with desk.sessions() as s:
        assert [a.kind for a in (await s.execute(select(Alert))).scalars()] == [AlertKind.duress]


async def test_it_changes_language_zone_and_phrases(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("zone"))
    assert "Saved." in await alice.text("UTC+3")
    await alice.say("/settings")
    await alice.say(Pick("phrases"))
    await alice.say(CANCEL_PIN)
    await alice.say(Pick("safe_phrase"))
    assert "not a command" in await alice.text("/weather")
    assert "Saved." in await alice.text("The tea is ready")
    await alice.say("/settings")
    await alice.say(Pick("language"))
    await alice.say(Pick("lang:pt"))
    defender = await alice.defender()
    assert defender is not None
    assert (defender.timezone, defender.locale) == ("Etc/GMT-3", "pt")
    assert settings(desk.vault, defender) == {"safe_phrase": "the tea is ready"}
    assert "PIN" in await alice.text("the tea is READY")  # the phrase asks for the PIN


async def test_it_moves_the_routine_to_its_local_time_in_the_new_zone(desk: Desk) -> None:
    alice = await onboard(desk)  # Bogotá, Monday 10:00 there
    for said in ("/settings", Pick("routine"), "20:00"):
        await alice.say(said)
    assert "Regular check-in set" in await alice.text(Pick("every_day"))
    for said in ("/settings", Pick("zone")):
        await alice.say(said)
    said = await alice.text("Madrid")
    assert "Saved." in said and "Your next check-in is due" in said
    async with desk.sessions() as s:
        (row,) = (await s.execute(select(CheckIn))).scalars()
    assert row.due_at == datetime(2026, 5, 4, 18, 0, tzinfo=UTC)  # 20:00 in Madrid, not 03:00


async def test_it_removes_a_contact_by_name_without_listing_them(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await alice.say(said)
    code = (await alice.text("Grandma")).split("by phone: ")[1].split("\n")[0]
    await desk.chat("gran").say(code)
    listed = await alice.text("/settings") + await alice.text(Pick("contacts"))
    assert "Grandma" not in listed and "1 invitation is waiting" in listed
    await alice.say(Pick("remove"))
    await alice.say(CANCEL_PIN)
    assert "No contact has that name." in await alice.text("Grandpa")
    for said in ("/settings", Pick("contacts"), Pick("remove"), CANCEL_PIN):
        await alice.say(said)
    assert "Removed." in await alice.text("grandma")
    async with desk.sessions() as s:
        contact = (await s.execute(select(TrustedContact))).scalar_one()
    assert contact.consent.value == "removed" and contact.label_enc is None


async def test_it_deletes_my_data_with_the_pin(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("delete"))
    assert "Your data is deleted." in await alice.text(CANCEL_PIN)
    async with desk.sessions() as s:
        address = (await s.execute(select(ChannelAddress))).scalar_one()
        assert address.defender_id is None
    assert await alice.defender() is None
    async with desk.sessions() as s:
        (gone,) = (await s.execute(select(Defender))).scalars()
        assert gone.timezone == "UTC"  # Bogotá before: in clear, and it names a city
    assert "send it here" in await alice.text("hello")  # a stranger now


async def test_it_keeps_the_data_when_deletion_is_forced(desk: Desk) -> None:
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    shown = []
    for chat, pin in ((calm, CANCEL_PIN), (forced, DURESS_PIN)):
        await chat.say("/settings")
        await chat.say(Pick("delete"))
        shown.append(await chat.say(pin))
    assert shown[0] == shown[1]
    defender = await forced.defender()  # kept, hidden from the phone (tests/flows/test_hidden)
    assert defender is not None and defender.status is DefenderStatus.hidden
    assert defender.cancel_pin_hash is not None
    async with desk.sessions() as s:
        assert [a.kind for a in (await s.execute(select(Alert))).scalars()] == [AlertKind.duress]


async def test_it_runs_a_settings_dialog_in_arabic(desk: Desk) -> None:
    layla = await onboard(desk, "layla", language="ar")
    await run_dialog(
        layla,
        [
            ("/settings", "الإعدادات: ماذا تريد أن تغيّر؟"),
            (Pick("discreet"), "يخفي الوضع المتحفّظ زر التنبيه"),
            (Pick("on"), "الوضع المتحفّظ مفعّل."),
            ("/settings", "الإعدادات"),
            (Pick("contacts"), "لديك 0 جهة اتصال مؤكدة."),
            (Pick("back"), "الإعدادات: ماذا تريد أن تغيّر؟"),
            (Pick("pins"), "أرسل رقمك السري الحالي."),
            ("٠٠٠٠", "هذا الرقم السري غير صحيح."),
        ],
    )


async def test_a_routine_set_while_paused_says_it_starts_at_the_resume(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/checkin")
    await alice.say(Pick("1h"))
    for said in ("/checkin", Pick("pause"), Pick("travelling"), CANCEL_PIN):
        await alice.say(said)
    for said in ("/settings", Pick("routine"), "20:00"):
        await alice.say(said)
    said = await alice.text(Pick("every_day"))
    assert "Regular check-in set. Your check-ins are paused: it starts when you resume" in said
    async with desk.sessions() as s:
        routine = (
            await s.execute(select(CheckIn).where(CheckIn.kind == CheckInKind.routine))
        ).scalar_one()
    assert routine.state is CheckInState.paused
    assert "Check-ins resumed." in await alice.text("/checkin") + await alice.text(Pick("resume"))
    async with desk.sessions() as s:
        routine = await s.get(CheckIn, routine.id)
    assert routine is not None and routine.state is CheckInState.armed
