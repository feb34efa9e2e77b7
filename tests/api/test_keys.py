"""Organisation keys: upload a new pair; items sealed before the rotation still open."""

from __future__ import annotations

import base64
import uuid

from nacl import pwhash

from core.crypto import (
    generate_org_keypair,
    open_sealed,
    protect_private_key,
    unprotect_private_key,
)
from tests.api.conftest import PASSPHRASE, Desk

NEW_PASSPHRASE = "another long passphrase for 2027"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_it_rotates_and_keeps_older_items_readable(desk: Desk) -> None:
    assert desk.a.alert is not None and desk.a.report is not None
    public, private = generate_org_keypair()  # on the responder's machine
    protected = protect_private_key(
        private,
        NEW_PASSPHRASE,
        opslimit=pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )
    async with await desk.client(desk.a, "admin") as c:
        made = await c.post(
            "/api/v1/org/keys",
            json={"public_key": b64(public), "protected_private_key": b64(protected)},
        )
        again = await c.post(
            "/api/v1/org/keys",
            json={"public_key": b64(public), "protected_private_key": b64(protected)},
        )
        keys = (await c.get("/api/v1/org/keys")).json()
        note = (
            await c.post(f"/api/v1/alerts/{desk.a.alert.id}/notes", json={"text": "after"})
        ).json()
        sealed = (await c.get(f"/api/v1/reports/{desk.a.report.id}/sealed")).json()
    assert made.status_code == 201 and made.json()["version"] == 2 and again.status_code == 409
    assert [(k["version"], k["current"]) for k in keys] == [(1, False), (2, True)]
    assert note["key_version"] == 2
    new = unprotect_private_key(base64.b64decode(keys[1]["protected_private_key"]), NEW_PASSPHRASE)
    text = open_sealed(
        new,
        base64.b64decode(note["sealed"]),
        org_id=desk.a.org.id,
        record_id=uuid.UUID(note["id"]),
        kind="alert_note",
    )
    old = unprotect_private_key(base64.b64decode(keys[0]["protected_private_key"]), PASSPHRASE)
    body = open_sealed(
        old,
        base64.b64decode(sealed["sealed_body"]),
        org_id=desk.a.org.id,
        record_id=desk.a.report.id,
        kind="report",
    )
    assert text == {"alert": str(desk.a.alert.id), "text": "after"}
    assert body == {"narrative": "SECRET-CANARY"}


async def test_it_refuses_a_private_key_in_clear_or_weakly_protected(desk: Desk) -> None:
    public, private = generate_org_keypair()
    weak = protect_private_key(private, NEW_PASSPHRASE, opslimit=1, memlimit=8192)
    attempts = [
        {"public_key": b64(public), "protected_private_key": b64(private)},
        {"public_key": b64(public), "protected_private_key": b64(weak)},
        {"public_key": b64(public[:16]), "protected_private_key": b64(weak)},
        {"public_key": "not base64!", "protected_private_key": b64(weak)},
    ]
    async with await desk.client(desk.a, "admin") as c:
        codes = [(await c.post("/api/v1/org/keys", json=a)).status_code for a in attempts]
    assert codes == [400, 400, 400, 400]
