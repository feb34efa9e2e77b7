"""Whatever text a chat app hands over can be sealed and opened again, unchanged."""

from __future__ import annotations

import uuid

from core.crypto import generate_org_keypair, open_sealed, seal


def test_a_lone_surrogate_in_a_file_name_seals_and_opens() -> None:
    """Telegram passes file names through as sent; a lone surrogate made sealing raise
    (UnicodeEncodeError), so the file could never be added to the report."""
    public, private = generate_org_keypair()
    org, record = uuid.uuid4(), uuid.uuid4()
    body = {"filename": "a\ud800.pdf", "text": "تم الاعتقال 🚨"}
    blob = seal(public, org_id=org, record_id=record, kind="evidence", body=body)
    assert open_sealed(private, blob, org_id=org, record_id=record, kind="evidence") == body
