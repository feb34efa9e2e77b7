"""Canaries stored through the model go in encrypted or sealed: none is found in a raw dump."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import Vault, generate_org_keypair, seal
from core.db import transaction
from core.models import (
    ChannelAddress,
    Conversation,
    Defender,
    Organisation,
    OutboxMessage,
    Report,
    TrustedContact,
)
from tests.pg import Cluster

CHAT_ID = "7319046682"  # a Telegram chat id
PHONE = "+4915112345678"
REPORT = "CANARY-REPORT-soldiers-at-the-river-crossing"
CANARIES = [CHAT_ID, PHONE, PHONE.lstrip("+"), REPORT, "CANARY-CONTACT", "CANARY-PAYLOAD"]


async def store_canaries(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> None:
    public, _private = generate_org_keypair()
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk", public_key=public)
        s.add(org)
        await s.flush()
        defender = Defender(id=uuid.uuid4(), org_id=org.id, handle="quiet-heron-41")
        defender.put(vault, "settings_enc", json.dumps({"panic_phrase": "CANARY-CONTACT"}))
        s.add(defender)
        await s.flush()
        for channel, value in (("telegram", CHAT_ID), ("signal", PHONE)):
            address = ChannelAddress(
                channel=channel,
                defender_id=defender.id,
                blind_index=vault.address_index(channel, value),
            )
            address.put(vault, "value_enc", value)
            s.add(address)
        contact = TrustedContact(defender_id=defender.id)
        contact.put(vault, "label_enc", "CANARY-CONTACT")
        report = Report(
            id=uuid.uuid4(), org_id=org.id, defender_id=defender.id, receipt_code="K7Q2"
        )
        report.sealed_body = seal(
            public, org_id=org.id, record_id=report.id, kind="report", body={"text": REPORT}
        )
        report.put(vault, "triage_enc", json.dumps({"act": "threat", "note": REPORT}))
        outbox = OutboxMessage(priority=0, channel="signal", idempotency_key=str(uuid.uuid4()))
        outbox.put(vault, "payload_enc", json.dumps({"to": PHONE, "text": "CANARY-PAYLOAD"}))
        conversation = Conversation(defender_id=defender.id, flow="report", state="what")
        conversation.put(vault, "data_enc", json.dumps({"draft": REPORT}))
        s.add_all([contact, report, outbox])
        await s.flush()
        s.add(conversation)


def found(raw: bytes) -> list[str]:
    hits = []
    for canary in CANARIES:
        for encoding in ("utf-8", "utf-16-le"):
            if canary.encode(encoding) in raw:
                hits.append(canary)
    return hits


async def test_it_leaves_no_canary_in_the_raw_database(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    db_url: str,
    backend: str,
    tmp_path: Path,
    pg_cluster: Cluster,
) -> None:
    await store_canaries(sessions, vault)
    if backend == "sqlite":
        # The database file with its write-ahead log: everything SQLite put on disk.
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("amparo.db*"))
    else:
        url = make_url(db_url)
        raw = subprocess.run(
            [
                str(pg_cluster.bindir / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(pg_cluster.port),
                "-U",
                "amparo",
                "--data-only",
                url.database or "",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    assert b"quiet-heron-41" in raw  # the dump is real: the generated handle is stored in clear
    assert found(raw) == []


def test_the_log_scan_finds_a_number_only_whole() -> None:
    """tests.logscan.leaks: a PIN inside a port number is not the PIN; written out, it is."""
    from tests.logscan import leaks

    assert not leaks("4826", "Uvicorn running on http://127.0.0.1:48267")
    assert leaks("4826", "pin=4826 typed") and leaks("4826", "4826")
    assert leaks("-1001234", "chat -1001234 said") and leaks("token", "a token here")
