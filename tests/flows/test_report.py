"""Incident reports: HURIDOCS-coded, sealed on arrival, a receipt code, nothing shown back."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from typing import Any

import pytest
from sqlalchemy import select

from core import media
from core.crypto import open_sealed
from core.messages import InboundAttachment
from core.models import Alert, AlertKind, Evidence, Report
from core.reports import EVIDENCE_KIND, PART_KIND
from flows import report
from flows.engine import housekeeping
from tests.core.test_media import MISTYPED_EXIF, image_with_exif, jpeg_with_gps
from tests.flows.conftest import (
    CANCEL_PIN,
    DURESS_PIN,
    Chat,
    Desk,
    Event,
    Pick,
    onboard,
    run_dialog,
)

CANARY = "CANARY soldiers at the river crossing"
PHOTO = b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 10


async def file_report(desk: Desk, chat_address: str = "alice") -> tuple[Report, list[str]]:
    chat = await onboard(desk, chat_address)
    shown: list[str] = []
    for said in (
        "/report",
        Pick("raid"),
        Pick("yesterday"),
        "Barrio Santa Fe",
        Pick("police"),
        Pick("me_and_others"),
        "٤",
        CANARY,
        "and they took two laptops",
        Pick("done"),
        Event(attachments=(InboundAttachment("photo", "image/jpeg", len(PHOTO), PHOTO),)),
        Pick("done"),
        Pick("anonymous"),
        Pick("urgent"),
        Pick("send"),
    ):
        shown.append(await chat.text(said))
    async with desk.sessions() as s:
        report = (await s.execute(select(Report))).scalar_one()
    return report, shown


async def at_evidence(desk: Desk) -> Chat:
    """Alice, onboarded, with a report started and its narrative sent: files are asked for."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("me"))
    await alice.say("they came at night")
    await alice.say(Pick("done"))
    return alice


async def sealed_evidence(desk: Desk) -> list[dict[str, Any]]:
    async with desk.sessions() as s:
        rows = (await s.execute(select(Evidence).order_by(Evidence.created_at))).scalars()
        return [
            open_sealed(
                desk.private_key, e.sealed, org_id=desk.org.id, record_id=e.id, kind=EVIDENCE_KIND
            )
            for e in rows
        ]


def sealed_parts(desk: Desk, filed: Report) -> list[dict[str, Any]]:
    """The parts of a filed report's account, opened with the desk's private key."""
    body = open_sealed(
        desk.private_key, filed.sealed_body, org_id=desk.org.id, record_id=filed.id, kind="report"
    )
    return [
        open_sealed(
            desk.private_key, base64.b64decode(p), org_id=desk.org.id, record_id=filed.id,
            kind=PART_KIND,
        )
        for p in body["parts"]
    ]  # fmt: skip


async def test_it_runs_a_report_dialog_in_english(desk: Desk) -> None:
    alice = await onboard(desk)
    await run_dialog(
        alice,
        [
            ("/report", "What happened? Choose the closest."),
            (Pick("threat"), "When did it happen?"),
            ("31/02/2026", "I couldn't read that date."),
            ("2026-04-30", "Where did it happen?"),
            (Pick("skip"), "Who did it?"),
            (Pick("unknown"), "Who was affected?"),
            (Pick("others"), "How many people, roughly?"),
            ("lots", "Please send a number"),
            (Pick("unsure"), "Tell us what happened"),
            (
                Event(attachments=(InboundAttachment("photo", "image/jpeg", 3, b"abc"),)),
                "text message",
            ),
            ("They called at night.", "Send more, or choose when you are done."),
            (Pick("done"), "photos, documents or voice notes"),
            (Pick("none"), "May the desk share this report"),
            (Pick("no"), "How urgent is it?"),
            (Pick("record"), "Send the report to the desk now?"),
            (Pick("send"), "Your receipt code is"),
        ],
    )


async def test_it_seals_the_report_and_codes_it_to_huridocs(desk: Desk) -> None:
    report, shown = await file_report(desk)
    assert all(CANARY not in s and "Barrio" not in s for s in shown)  # nothing shown back (R7)
    assert report.receipt_code in shown[-1] and len(report.receipt_code) == 6
    triage = json.loads(report.get_text(desk.vault, "triage_enc") or "")
    assert triage == {
        "type_of_act": "040101",
        "urgency": "urgent",
        "country": "CO",
        "initial_date": "2026-05-03",
        "initial_date_type": "exact",
    }
    body = open_sealed(
        desk.private_key,
        report.sealed_body,
        org_id=desk.org.id,
        record_id=report.id,
        kind="report",
    )
    assert body["perpetrator_type"] == "police" and body["count"] == 4
    assert body["consent"] == "anonymous" and body["counting_unit"] == "group"
    parts = [
        open_sealed(
            desk.private_key,
            base64.b64decode(p),
            org_id=desk.org.id,
            record_id=report.id,
            kind=PART_KIND,
        )
        for p in body["parts"]
    ]
    assert parts == [
        {"place": "Barrio Santa Fe"},
        {"text": CANARY},
        {"text": "and they took two laptops"},
    ]
    async with desk.sessions() as s:
        (evidence,) = (await s.execute(select(Evidence))).scalars()
        raised = [a.kind for a in (await s.execute(select(Alert))).scalars()]
    assert body["evidence"] == [str(evidence.id)] and evidence.filed_at is not None
    sealed = open_sealed(
        desk.private_key,
        evidence.sealed,
        org_id=desk.org.id,
        record_id=evidence.id,
        kind=EVIDENCE_KIND,
    )
    assert sealed["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    assert base64.b64decode(sealed["original"]) == PHOTO
    assert raised == [AlertKind.report]  # "I need help now" alerts the desk


async def test_it_discards_a_cancelled_report_and_its_files(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("me"))
    await alice.say("text")
    await alice.say(Pick("done"))
    await alice.say(Event(attachments=(InboundAttachment("voice", "audio/ogg", 4, b"OggS"),)))
    assert "Nothing was sent." in await alice.text("/cancel")
    async with desk.sessions() as s:
        assert (await s.execute(select(Evidence))).first() is None
        assert (await s.execute(select(Report))).first() is None


async def test_deleting_my_data_mid_report_deletes_the_unsent_files(desk: Desk) -> None:
    """Deleting one's data says reports already sent stay: the files of one not sent go with
    the rest, at once, not a day later with the abandoned drafts. A filed report's stay."""
    bob = await onboard(desk, "bob")
    await file_report(desk, "carol")  # another defender's filed report and its file stay
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await bob.say(said)
    for said in (Pick("me"), "they came at night", Pick("done")):
        await bob.say(said)
    await bob.say(Event(attachments=(InboundAttachment("photo", "image/jpeg", 4, PHOTO),)))
    await bob.say("/settings")
    await bob.say(Pick("delete"))
    assert "Your data is deleted." in await bob.text(CANCEL_PIN)
    async with desk.sessions() as s:
        left = (await s.execute(select(Evidence))).scalars().all()
    assert len(left) == 1 and left[0].filed_at is not None


async def test_a_count_in_superscript_digits_is_asked_again(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    """A superscript two is a digit to str.isdigit() but not to int(): the step raised, the
    defender got "something went wrong" and the log a ValueError quoting what they typed."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("others"))
    caplog.clear()
    assert "Please send a number, like 3." in await alice.text("²")
    assert "²" not in caplog.text
    assert "Tell us what happened" in await alice.text("12")


async def test_a_refused_part_of_the_account_is_deleted_from_the_chat_too(desk: Desk) -> None:
    """Words of the account the bot refuses (over 4,000 characters, which Telegram sends; a
    control character; the part over the limit) were left on the phone while every part
    taken was deleted: the one a captor most wants to read. Deleted all the same."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("me"))
    for refused in (CANARY + " " * 10 + "x" * 4050, CANARY + "\x0b"):
        replies = await alice.say(refused)
        assert "Tell us what happened" in "".join(r.text for r in replies)
        assert (str(alice.sent),) in [r.delete_message_ids for r in replies]
    for n in range(report.MAX_PARTS):
        await alice.say(f"part {n}")
    replies = await alice.say(CANARY)
    assert "That is all we can take" in replies[0].text
    assert (str(alice.sent),) in [r.delete_message_ids for r in replies]
    photo = Event(attachments=(InboundAttachment("photo", "image/jpeg", 4, PHOTO),))
    replies = await alice.say(photo)  # a file here is asked for later: not deleted unsealed
    assert not any(r.delete_message_ids for r in replies)


async def test_it_refuses_a_file_over_the_limit_and_keeps_the_state(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("me"))
    await alice.say("text")
    await alice.say(Pick("done"))
    huge = InboundAttachment("document", "application/pdf", 25 * 1024 * 1024, None)
    assert "the limit is 20 MB" in await alice.text(Event(attachments=(huge,)))
    # Within the limit, but the channel could not fetch it (Telegram kept failing): not "too
    # large", and the defender is asked to send it again.
    lost = InboundAttachment("photo", "image/jpeg", 0, None)
    said = await alice.text(Event(attachments=(lost,)))
    assert "send it again" in said and "limit" not in said
    assert "May the desk share" in await alice.text(Pick("done"))


async def test_it_runs_a_report_dialog_in_portuguese(desk: Desk) -> None:
    joao = await onboard(desk, "joao", language="pt")
    await run_dialog(
        joao,
        [
            ("/report", "O que aconteceu? Escolha o mais parecido."),
            (Pick("surveillance"), "Quando aconteceu?"),
            ("3/5", "Qual data você quer dizer?"),  # 3 de maio, ou 5 de março?
            ("1", "Onde aconteceu?"),
            ("Belém", "Quem fez isso?"),
            (Pick("company"), "Quem foi afetado?"),
            (Pick("me"), "Conte o que aconteceu"),
            ("Um carro me seguiu.", "Recebido."),
            (Pick("done"), "Você tem fotos"),
            (Pick("none"), "A equipe de apoio pode compartilhar"),
            (Pick("yes"), "Qual é a urgência?"),
            (Pick("soon"), "Enviar agora o relato"),
            (Pick("send"), "O seu código de recibo é"),
        ],
    )


async def test_a_photo_whose_exif_breaks_the_preview_is_still_sealed(desk: Desk) -> None:
    """Pillow raised struct.error on an oddly typed EXIF tag: the message's files were lost."""
    alice = await at_evidence(desk)
    data = image_with_exif(MISTYPED_EXIF, "JPEG")
    photo = InboundAttachment("document", "image/jpeg", len(data), data, "IMG_0001.jpg")
    assert "1 file received" in await alice.text(Event(attachments=(photo,)))
    (sealed,) = await sealed_evidence(desk)
    assert base64.b64decode(sealed["original"]) == data
    assert sealed["sha256"] == hashlib.sha256(data).hexdigest()


async def test_images_are_decoded_off_the_event_loop(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to a second of decoding ran on the event loop, holding back every other chat."""
    decoded_in: list[threading.Thread] = []
    real = media.preview

    def watched(data: bytes) -> bytes | None:
        decoded_in.append(threading.current_thread())
        return real(data)

    monkeypatch.setattr(media, "preview", watched)
    alice = await at_evidence(desk)
    data = jpeg_with_gps()
    photo = InboundAttachment("photo", "image/jpeg", len(data), data)
    assert "1 file received" in await alice.text(Event(attachments=(photo,)))
    (sealed,) = await sealed_evidence(desk)
    assert sealed["preview"] is not None
    assert decoded_in and threading.current_thread() not in decoded_in


async def test_a_report_takes_a_bounded_number_of_files(desk: Desk) -> None:
    """240 files went into one report; now the first MAX_FILES are kept, the defender is told."""
    alice = await at_evidence(desk)
    files = tuple(
        InboundAttachment("document", "application/pdf", 9, b"%%PDF-%03d" % i) for i in range(15)
    )
    assert "15 files received" in await alice.text(Event(attachments=files))
    said = await alice.text(Event(attachments=files))
    assert "One report can hold up to 20 files (100 MB in all)" in said
    assert "The files already received are kept." in said and "20 files received" in said
    said = await alice.text(Event(attachments=files[:1]))
    assert "One report can hold up to 20 files" in said and "20 files received" in said
    assert "May the desk share" in await alice.text(Pick("done"))
    await alice.say(Pick("no"))
    await alice.say(Pick("record"))
    assert "Your receipt code is" in await alice.text(Pick("send"))
    sealed = await sealed_evidence(desk)
    assert len(sealed) == report.MAX_FILES
    originals = sorted(base64.b64decode(e["original"]) for e in sealed)
    assert originals == sorted(f.data or b"" for f in files + files[:5])


async def test_a_report_takes_a_bounded_total_of_bytes(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "MAX_TOTAL_BYTES", 100)
    alice = await at_evidence(desk)
    forty = InboundAttachment("document", "application/pdf", 40, b"%PDF-" + b"x" * 35)
    said = await alice.text(Event(attachments=(forty, forty, forty, forty)))
    assert "I couldn't take the rest" in said and "2 files received" in said
    assert "I couldn't take the rest" in await alice.text(Event(attachments=(forty,)))
    small = InboundAttachment("document", "application/pdf", 6, b"%PDF-1")
    assert "3 files received" in await alice.text(Event(attachments=(small,)))
    assert len(await sealed_evidence(desk)) == 3


async def test_file_names_are_sealed_without_bidi_overrides_or_controls(desk: Desk) -> None:
    """Text with U+202E or NUL is refused; a file's name was sealed as sent, and the desk saw
    "statement\u202egpj.exe" as "statementexe.jpg"."""
    alice = await at_evidence(desk)
    name = "statement\u202egpj.exe\x00"
    document = InboundAttachment("document", "application/pdf", 10, b"%PDF-1.7 x", name)
    assert "1 file received" in await alice.text(Event(attachments=(document,)))
    (sealed,) = await sealed_evidence(desk)
    assert sealed["filename"] == "statementgpj.exe"


async def test_an_edited_message_of_the_account_is_kept_as_a_correction(desk: Desk) -> None:
    """R3: the edit becomes a new part; the original stays as it was sent."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("me"))
    await alice.say(Event(text="they came at 10", chat_message_id="m1"))
    answer = await alice.text(Event(text="they came at 11", edited=True, chat_message_id="m1"))
    assert "correction" in answer
    for said in (Pick("done"), Pick("done"), Pick("anonymous"), Pick("urgent"), Pick("send")):
        await alice.say(said)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    parts = sealed_parts(desk, filed)
    assert parts == [{"text": "they came at 10"}, {"text": "they came at 11", "correction": True}]
    # outside the account an edit is still not read
    assert "edited messages" in await alice.text(Event(text="hola", edited=True))


async def test_a_caption_sent_with_files_is_kept_with_them(desk: Desk) -> None:
    """The words a defender writes under a photo are part of their account: sealed, naming the
    files they came with (they were dropped). One that breaks the text rules is refused out
    loud, and the files are still taken."""
    alice = await at_evidence(desk)
    photo = InboundAttachment("photo", "image/jpeg", len(PHOTO), PHOTO)
    shown = await alice.text(Event(text="the badge of the officer", attachments=(photo,)))
    assert "1 file received" in shown
    async with desk.sessions() as s:  # the file the caption came with: the only one yet
        first = (await s.execute(select(Evidence.id))).scalar_one()
    shown = await alice.text(Event(text="bad \u202e caption", attachments=(photo,)))
    assert "2 files received" in shown and "invisible control characters" in shown
    for said in (Pick("done"), Pick("anonymous"), Pick("urgent"), Pick("send")):
        await alice.say(said)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    parts = sealed_parts(desk, filed)
    assert parts == [
        {"text": "they came at night"},
        {"text": "the badge of the officer", "caption": [str(first)]},
    ]


@pytest.mark.parametrize("then", ["pin", "cancel"])
async def test_a_check_in_in_the_middle_of_a_report_keeps_the_report(
    desk: Desk, then: str
) -> None:
    """ "I'm safe" pressed (or the check-in reminder answered) while writing a report: the
    report, whose sealed parts live in the conversation, is set aside for the check-in and
    taken up again where it was, after the PIN or after the check-in is called off."""
    alice = await onboard(desk)
    for said in ("/report", Pick("raid"), Pick("yesterday"), "Barrio Santa Fe", Pick("police")):
        await alice.say(said)
    await alice.say(Pick("me_and_others"))
    await alice.say("٤")
    await alice.say(CANARY)
    assert "Send your PIN" in await alice.text(Pick("safe"))
    back = await alice.say(CANCEL_PIN if then == "pin" else "cancel")
    said = " ".join(r.text for r in back)
    assert ("noted that you are safe" in said) == (then == "pin")
    asked = back[-1]
    assert [c.key for c in asked.choices] == ["done"]  # the account's question again
    for more in ("and they took two laptops", Pick("done"), Pick("done")):
        await alice.say(more)
    for last in (Pick("anonymous"), Pick("urgent"), Pick("send")):
        await alice.say(last)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    assert sealed_parts(desk, filed) == [
        {"place": "Barrio Santa Fe"},
        {"text": CANARY},
        {"text": "and they took two laptops"},
    ]


@pytest.mark.parametrize("late", ["more", "pin", "duress", "cancel"])
async def test_a_check_in_left_unanswered_in_the_middle_of_a_report_keeps_the_report(
    desk: Desk, late: str
) -> None:
    """The check-in's PIN question, a report set aside for it, unanswered for its 30 minutes
    (housekeeping running meanwhile): the check-in closes unconfirmed, as any conversation
    left that long, but the report is taken up again at its last question. What comes then
    goes on with the report, except an answer to the closed question: a late PIN checks
    nobody in (the duress PIN still raises its alert) and a late cancel discards nothing."""
    alice = await onboard(desk)
    for said in ("/report", Pick("raid"), Pick("yesterday"), "Barrio Santa Fe", Pick("police")):
        await alice.say(said)
    for said in (Pick("me_and_others"), "٤", CANARY):
        await alice.say(said)
    before = await alice.defender()
    assert "Send your PIN" in await alice.text(Pick("safe"))
    desk.clock.advance(minutes=31)
    await housekeeping(desk.sessions, desk.clock.now)
    typed = {"more": "and they took two laptops", "pin": CANCEL_PIN, "duress": DURESS_PIN}
    back = await alice.say(typed.get(late, "cancel"))
    said = " ".join(r.text for r in back)
    assert "you are not checked in" in said and "noted that you are safe" not in said
    assert [c.key for c in back[-1].choices] == ["done"]  # the account's question
    after = await alice.defender()
    assert before is not None and after is not None
    assert after.last_checkin_at == before.last_checkin_at
    if late != "more":
        await alice.say("and they took two laptops")
    for more in (Pick("done"), Pick("done"), Pick("anonymous"), Pick("urgent"), Pick("send")):
        await alice.say(more)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
        duress = (await s.execute(select(Alert).where(Alert.kind == AlertKind.duress))).all()
    assert sealed_parts(desk, filed) == [
        {"place": "Barrio Santa Fe"},
        {"text": CANARY},
        {"text": "and they took two laptops"},
    ]
    assert len(duress) == (late == "duress")


async def test_a_report_set_aside_for_a_check_in_keeps_its_old_files(desk: Desk) -> None:
    """Housekeeping keeps the files of a report being written however old they are: a report
    set aside for a check-in is still being written."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    for said in (Pick("me"), "text", Pick("done")):
        await alice.say(said)
    for n in range(6):  # a file every 5 h: the report's conversation never expires (6 h)
        data = b"OggS" + bytes([n])
        await alice.say(Event(attachments=(InboundAttachment("voice", "audio/ogg", 5, data),)))
        desk.clock.advance(hours=5)
    assert "Send your PIN" in await alice.text(Pick("safe"))
    desk.clock.advance(minutes=10)
    await housekeeping(desk.sessions, desk.clock.now)  # the first files are a day old
    await alice.say(CANCEL_PIN)
    for said in (Pick("done"), Pick("no"), Pick("record")):
        await alice.say(said)
    assert "receipt code" in await alice.text(Pick("send"))
    async with desk.sessions() as s:
        filed = list((await s.execute(select(Evidence))).scalars())
    assert len(filed) == 6, f"told '6 files received', {len(filed)} filed"


async def test_im_safe_pressed_again_during_the_check_in_keeps_the_report(desk: Desk) -> None:
    """ "I'm safe" pressed a second time while its PIN question is open (a double tap, or a
    reminder answered then): the report set aside for the first is still set aside."""
    alice = await onboard(desk)
    for said in ("/report", Pick("raid"), Pick("yesterday"), "Barrio Santa Fe", Pick("police")):
        await alice.say(said)
    for said in (Pick("me_and_others"), "٤", CANARY):
        await alice.say(said)
    assert "Send your PIN" in await alice.text(Pick("safe"))
    assert "Send your PIN" in await alice.text(Pick("safe"))
    back = await alice.say(CANCEL_PIN)
    assert [c.key for c in back[-1].choices] == ["done"]  # the account's question again
    for more in (Pick("done"), Pick("done"), Pick("anonymous"), Pick("urgent"), Pick("send")):
        await alice.say(more)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    assert sealed_parts(desk, filed) == [{"place": "Barrio Santa Fe"}, {"text": CANARY}]
