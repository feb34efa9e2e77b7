"""Words typed at the report's evidence question ("Do you have photos…?"): a defender who
writes a description there instead of sending a file is still telling the desk something.
It is sealed into the report like the rest of the account and deleted from the chat; its
words are kept in clear nowhere (the conversation's data included)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from core.models import Base, Conversation, Report
from tests.flows.conftest import Desk, Pick
from tests.flows.test_discreet_deletions import deleted, discreet
from tests.flows.test_report import at_evidence, sealed_parts

WORDS = "CANARY-evidence the officer's badge read 4471, plate BXK-22"


async def in_clear(desk: Desk, needle: str) -> list[str]:
    """Every column of every row, as stored, and the conversations' data decrypted."""
    found = []
    async with desk.sessions() as s:
        for table in Base.metadata.sorted_tables:
            for row in (await s.execute(select(table))).all():
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    if needle.encode() in raw:
                        found.append(table.name)
        for conversation in (await s.execute(select(Conversation))).scalars():
            data = conversation.get_text(desk.vault, "data_enc") or ""
            if needle in data or needle in json.dumps(json.loads(data or "{}")):
                found.append("conversation data")
    return found


@pytest.mark.parametrize("discreet_mode", [False, True])
async def test_words_typed_at_the_evidence_question_are_sealed_and_deleted(
    desk: Desk, discreet_mode: bool
) -> None:
    if discreet_mode:
        alice = await discreet(desk)
        for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
            await alice.say(said)
        for said in (Pick("me"), "they came at night", Pick("done")):
            await alice.say(said)
    else:
        alice = await at_evidence(desk)
    replies = await alice.say(WORDS)
    shown = "\n".join(r.text for r in replies)
    assert str(alice.sent) in deleted(replies)  # off the phone, as every part of the account
    assert "Received" in shown and "pick one of the options" not in shown
    assert WORDS not in shown
    assert all(r.sensitive for r in replies) if discreet_mode else True
    assert await in_clear(desk, "CANARY") == []
    for said in (Pick("done"), Pick("no"), Pick("record"), Pick("send")):
        await alice.say(said)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    assert sealed_parts(desk, filed) == [{"text": "they came at night"}, {"text": WORDS}]
    assert await in_clear(desk, "CANARY") == []


@pytest.mark.parametrize("typed", ["no", "done", "Done", "2"])
async def test_a_typed_no_or_done_at_the_evidence_question_goes_on(desk: Desk, typed: str) -> None:
    alice = await at_evidence(desk)  # "2": the console numbers the options ("I have none")
    assert "May the desk share" in await alice.text(typed)
    assert await in_clear(desk, "CANARY") == []


async def test_refused_words_at_the_evidence_question_are_deleted_too(desk: Desk) -> None:
    alice = await at_evidence(desk)
    replies = await alice.say("CANARY bad \u202e words")
    assert "invisible control characters" in replies[0].text
    assert str(alice.sent) in deleted(replies)
    assert await in_clear(desk, "CANARY") == []
