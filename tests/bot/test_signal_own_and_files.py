"""Signal: the bot's own account's other devices are not defenders; attachments are fetched
by us, size first (R16), and deleted from signal-cli afterwards (R17), unread where nothing is
fetched (strangers, groups, the bot's own devices, a frame without a sender, previews, quotes);
a failed fetch keeps the message's text; a message from a changed key is handed on as such."""

# ruff: noqa: F811  (the fixtures are imported from test_signal)
from __future__ import annotations

import asyncio

import pytest

from bot.signal import Signal
from core.messages import Address, Inbound, Outbound
from tests.bot.test_signal import (  # noqa: F401
    ALICE,
    defenders,
    inbox,
    service,
    signal,
    wait_for,
)
from tests.standins.signal_cli import GROUP_INTERNAL_ID, SignalStandIn


async def test_sync_message_from_own_device_is_not_a_defender_message(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    ts = 1735725600123
    frame = {
        "account": service.number,
        "envelope": {
            "source": service.number,
            "sourceNumber": service.number,
            "sourceUuid": "11111111-2222-3333-4444-555555555555",
            "sourceName": "Bot phone",
            "sourceDevice": 2,
            "timestamp": ts,
            "serverReceivedTimestamp": ts + 5,
            "serverDeliveredTimestamp": ts + 10,
            "syncMessage": {
                "sentMessage": {
                    "destination": ALICE,
                    "destinationNumber": None,
                    "destinationUuid": ALICE,
                    "timestamp": ts,
                    "message": "I'm safe 1234",
                    "expiresInSeconds": 0,
                    "viewOnce": False,
                }
            },
        },
    }
    await service.push(frame)
    await service.send_text(ALICE, "marker")
    await wait_for(lambda: any(i.text == "marker" for i in inbox))
    await asyncio.sleep(0.2)
    spoofed = [i for i in inbox if i.text == "I'm safe 1234"]
    assert spoofed == [], (
        f"sync transcript delivered as defender input: address={spoofed[0].address}"
    )


async def test_oversized_attachment_is_not_downloaded(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """R16: size checked before download (cap 20 MB)."""
    big = 25 * 1024 * 1024
    service.attachments["big1"] = b"x" * big
    meta = {
        "id": "big1",
        "contentType": "video/mp4",
        "filename": "v.mp4",
        "size": big,
        "isVoiceNote": False,
    }
    await service.send_text(ALICE, "video", attachments=[meta])
    await wait_for(lambda: inbox)
    gets = [p for v, p, _ in service.requests if v == "GET" and "attachments" in p]
    assert inbox[0].attachments[0].data is None
    assert gets == [], f"downloaded a {big}-byte attachment before any size check: {gets}"


async def test_text_survives_an_attachment_that_cannot_be_fetched(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """A message whose attachment signal-cli did not store (404 on /v1/attachments)."""
    meta = {
        "id": "gone1",
        "contentType": "image/jpeg",
        "filename": "p.jpg",
        "size": 10,
        "isVoiceNote": False,
    }
    await service.send_text(ALICE, "they took him, photo attached", attachments=[meta])
    await asyncio.sleep(0.5)
    await service.send_text(ALICE, "marker")
    await wait_for(lambda: any(i.text == "marker" for i in inbox), seconds=20)
    assert [i.text for i in inbox] == ["they took him, photo attached", "marker"]


async def test_attachments_are_deleted_from_signal_cli(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """R17: no plaintext evidence left in signal-cli's attachment store."""
    await service.send_attachment(ALICE, b"%PDF-1.7 evidence", "application/pdf", text="doc")
    await wait_for(lambda: inbox)
    await asyncio.sleep(0.3)
    deletes = [p for v, p, _ in service.requests if v == "DELETE" and "attachments" in p]
    assert deletes, "attachment left on signal-cli's disk"


def photo_meta(service: SignalStandIn, key: str) -> dict[str, object]:
    """A photo in signal-cli's attachment store, as a frame announces it."""
    service.attachments[key] = b"\xff\xd8\xff CANARY photo"
    return {
        "id": key,
        "contentType": "image/jpeg",
        "filename": "p.jpg",
        "size": 18,
        "isVoiceNote": False,
    }


async def deleted_unread(service: SignalStandIn, inbox: list[Inbound], key: str) -> bool:
    """After a marker from Alice has come through: was ``key`` deleted, and never fetched?"""
    await service.send_text(ALICE, "marker")
    await wait_for(lambda: any(i.text == "marker" for i in inbox))
    await asyncio.sleep(0.2)
    calls = [(verb, path) for verb, path, _ in service.requests if key in path]
    return calls == [("DELETE", f"/v1/attachments/{key}")]


async def test_a_group_attachment_is_deleted_unread(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """The group path (the desk's responder group) neither fetched nor deleted files (R17)."""
    service.add_group([ALICE])
    group = {"groupId": GROUP_INTERNAL_ID, "groupName": "Desk", "revision": 1, "type": "DELIVER"}
    meta = photo_meta(service, "grp1")
    await service.send_text(ALICE, "look at this", groupInfo=group, attachments=[meta])
    assert await deleted_unread(service, inbox, "grp1")
    assert [i.text for i in inbox] == ["marker"]


async def test_attachments_of_the_bots_own_devices_are_deleted_unread(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """A phone linked to the bot's number: its messages and sync transcripts are dropped
    before signalbot parses them, and their files stayed in signal-cli's store (R17)."""
    own = service.envelope(
        ALICE, {"message": "from my laptop", "attachments": [photo_meta(service, "own1")]}
    )
    own["envelope"]["sourceNumber"] = service.number
    await service.push(own)
    transcript = service.envelope(ALICE, {})
    transcript["envelope"]["syncMessage"] = {
        "sentMessage": {
            "destinationUuid": ALICE,
            "message": "sent from the bot's phone",
            "attachments": [photo_meta(service, "sync1")],
        }
    }
    del transcript["envelope"]["dataMessage"]
    await service.push(transcript)
    assert await deleted_unread(service, inbox, "own1")
    assert await deleted_unread(service, inbox, "sync1")
    assert [i.text for i in inbox] == ["marker", "marker"]


async def test_attachments_of_a_frame_without_a_sender_are_deleted_unread(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    frame = service.envelope(
        ALICE, {"message": "who sent this?", "attachments": [photo_meta(service, "anon1")]}
    )
    for field in ("source", "sourceNumber", "sourceUuid"):
        frame["envelope"][field] = None
    await service.push(frame)
    assert await deleted_unread(service, inbox, "anon1")
    assert [i.text for i in inbox] == ["marker"]


STRANGER = "7c0ffee0-3c57-4d3c-9d25-6f1f1d3c0a12"


async def test_a_strangers_files_are_deleted_unread(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """Someone the lookup does not know as a defender is only asked for an invite code: their
    files were fetched from signal-cli all the same (R16, R17)."""
    await service.send_text(STRANGER, "hello", attachments=[photo_meta(service, "str1")])
    await wait_for(lambda: inbox)
    await asyncio.sleep(0.2)
    calls = [(verb, path) for verb, path, _ in service.requests if "str1" in path]
    assert calls == [("DELETE", "/v1/attachments/str1")]
    (theirs,) = inbox
    assert theirs.address == STRANGER and theirs.text == "hello"
    assert [(a.size, a.data) for a in theirs.attachments] == [(18, None)]  # told, not read


async def test_preview_images_quote_thumbnails_and_avatars_are_deleted_unread(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """signal-cli stores a link preview's image, a quoted message's thumbnail and a shared
    contact's avatar as it stores attachments (its JsonDataMessage); they stayed there."""
    quote = {
        "id": 1735725500000,
        "author": ALICE,
        "authorNumber": None,
        "authorUuid": ALICE,
        "text": "the photo",
        "attachments": [
            {
                "contentType": "image/jpeg",
                "filename": "p.jpg",
                "thumbnail": photo_meta(service, "thumb1"),
            }
        ],
    }
    preview = {
        "url": "https://example.org/a",
        "title": "A",
        "description": "",
        "image": photo_meta(service, "prev1"),
    }
    contact = {
        "name": {"display": "Bea"},
        "avatar": {"attachment": photo_meta(service, "avat1"), "isProfile": False},
        "organization": None,
    }
    extra = {"quote": quote, "previews": [preview], "contacts": [contact]}
    await service.send_text(
        ALICE, "see https://example.org/a", attachments=[photo_meta(service, "own2")], **extra
    )
    await service.send_text(STRANGER, "look", **extra)
    await service.send_text(ALICE, "marker")
    await wait_for(lambda: any(i.text == "marker" for i in inbox))
    await asyncio.sleep(0.2)
    for key in ("thumb1", "prev1", "avat1"):  # once for each of the two messages
        calls = [(verb, path) for verb, path, _ in service.requests if key in path]
        assert calls == [("DELETE", f"/v1/attachments/{key}")] * 2, key
    own = [(verb, path) for verb, path, _ in service.requests if "own2" in path]
    assert own == [("GET", "/v1/attachments/own2"), ("DELETE", "/v1/attachments/own2")]
    (mine,) = [i for i in inbox if i.text and i.text.startswith("see")]
    assert [a.data for a in mine.attachments] == [b"\xff\xd8\xff CANARY photo"]


async def test_a_message_from_a_changed_key_is_handed_on_as_such(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """R6: signal-cli could not decrypt it (untrusted identity): the flows hear of it at once,
    under an id that the same message, decrypted once the key is trusted, does not repeat."""
    await service.send_untrusted(ALICE, timestamp=1735725600123)
    await service.send_text(ALICE, "again", timestamp=1735725600123)
    await wait_for(lambda: len(inbox) == 2)
    changed, decrypted = inbox
    assert changed.key_changed and changed.address == ALICE and changed.text is None
    assert not decrypted.key_changed and decrypted.text == "again"
    assert changed.message_id != decrypted.message_id


async def test_a_failed_delete_is_tried_again(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """signal-cli-rest-api failed to delete a read file: it is not left in signal-cli's store
    (R17) but deleted after the next delete that goes through."""
    key = "evidence1"
    service.attachments[key] = b"%PDF-1.7 evidence"
    service.fail_next(f"/v1/attachments/{key}", 500, "signal-cli daemon unavailable")
    meta = {"id": key, "contentType": "application/pdf", "filename": None, "size": 17}
    await service.send_text(ALICE, "doc", attachments=[{**meta, "isVoiceNote": False}])
    await wait_for(lambda: inbox)
    assert inbox[0].attachments[0].data == b"%PDF-1.7 evidence"
    assert key not in service.deleted
    await service.send_attachment(ALICE, b"second", "text/plain", text="more")
    await wait_for(lambda: len(inbox) == 2)
    await wait_for(lambda: key in service.deleted)
    assert len(service.deleted) == 2


async def test_a_frame_signalbot_refuses_keeps_its_text_and_loses_its_files(
    service: SignalStandIn,
    signal: Signal,
    inbox: list[Inbound],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """An attachment without ``isVoiceNote`` fails signalbot's strict model, which would stop
    its receiver (the message lost, its file never deleted, the frame's traceback on stderr).
    The text goes on, the file is deleted unread, and the next message arrives at once."""
    service.attachments["evid1"] = b"x" * 8
    meta = {"id": "evid1", "contentType": "image/jpeg", "filename": "badge_4411.jpg", "size": 8}
    await service.push(
        service.envelope(ALICE, {"message": "SOS at Calle 5", "attachments": [meta]})
    )
    await wait_for(lambda: inbox, 5)
    (first,) = inbox
    assert (first.address, first.text) == (ALICE, "SOS at Calle 5")
    assert [(a.data, a.size) for a in first.attachments] == [(None, 8)]
    await wait_for(lambda: service.deleted == ["evid1"], 5)
    assert [v for v, p, _ in service.requests if "evid1" in p] == ["DELETE"]
    await service.send_text(ALICE, "after")
    await wait_for(lambda: len(inbox) == 2, 2)  # no restart, no backoff
    out, err = capfd.readouterr()
    for secret in ("4411", "badge", "Calle", ALICE):
        assert secret not in out + err


async def test_a_refused_frame_without_a_timer_gets_the_default_before_our_answer(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """Like a parsed message, one whose frame signalbot refuses says whether the chat has a
    disappearing timer: without one, our answer to it is not left on the phone for good
    (R12); the default is set first."""
    meta = {"id": "evid2", "contentType": "image/jpeg", "filename": None, "size": 8}
    frame = service.envelope(ALICE, {"message": "SOS", "attachments": [meta]})
    assert frame["envelope"]["dataMessage"]["expiresInSeconds"] == 0
    await service.push(frame)
    await wait_for(lambda: inbox, 5)
    await signal.send(Address("signal", ALICE), Outbound("Alert raised."))
    timers = [b for _, p, b in service.requests if p.startswith("/v1/contacts/")]
    assert timers == [{"recipient": ALICE, "expiration_in_seconds": 86400}]
    assert [m["message"] for m in service.sent] == ["Alert raised."]


async def test_a_group_attachment_is_deleted_even_if_signalbot_fails_on_its_message(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """A message from a group signalbot does not know yet makes it fetch the group list; if
    that fails, its receiver fails on the message, which never reaches us. Its files, never
    read, are deleted before signalbot sees it: none is left in signal-cli's store (R17)."""
    service.fail_next(f"/v1/groups/{service.number}", 500, "signal-cli daemon unavailable")
    group = {"groupId": GROUP_INTERNAL_ID, "groupName": "Desk", "revision": 1, "type": "DELIVER"}
    meta = photo_meta(service, "grp2")
    await service.send_text(ALICE, "look at this", groupInfo=group, attachments=[meta])
    await wait_for(lambda: not service._failures[f"/v1/groups/{service.number}"], 5)
    await asyncio.sleep(0.2)  # the receiver is being restarted by now
    await asyncio.wait_for(signal.ready.wait(), 10)
    assert await deleted_unread(service, inbox, "grp2")
