from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import audit
from core.audit import GENESIS, AuditBusyError, Verdict, head, record, verify
from core.crypto import Keyring, Vault
from core.db import transaction
from core.models import AuditEntry

Sessions = async_sessionmaker[AsyncSession]
ENTRIES: Any = AuditEntry.__table__
ORG = uuid.UUID("0b7c7a52-3f0e-4c56-9d0a-5f4f3a2e1d10")
T0 = datetime(2026, 3, 29, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
CONTENT = ["at", "actor", "action", "target", "detail"]


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify() pages through the log; tiny pages make every test cross page boundaries."""
    monkeypatch.setattr(audit, "BATCH", 3)


async def write_log(sessions: Sessions, vault: Vault, n: int = 10) -> None:
    for i in range(1, n + 1):
        async with transaction(sessions) as s:
            await record(
                s,
                vault,
                actor=f"responder-ñ{i}",
                action="view",
                target=f"alert:{i}",
                org_id=ORG if i % 2 else None,
                detail={"n": i, "ids": (i, i + 1), "ratio": 0.1, "nested": {"b": 1, "a": [None]}},
                now=T0 + timedelta(minutes=i),
            )


async def check(sessions: Sessions, vault: Vault, **kwargs: Any) -> Verdict:
    async with sessions() as s:
        return await verify(s, vault, **kwargs)


async def export_head(sessions: Sessions) -> tuple[int, bytes]:
    async with sessions() as s:
        exported = await head(s)
    assert exported is not None
    return exported


async def run(sessions: Sessions, *statements: Any) -> None:
    async with transaction(sessions) as s:
        for statement in statements:
            await s.execute(statement)


def ok(checked: int) -> Verdict:
    return Verdict(ok=True, checked=checked, first_bad_seq=None, reason=None)


def bad(seq: int, reason: str, checked: int) -> Verdict:
    return Verdict(ok=False, checked=checked, first_bad_seq=seq, reason=reason)


async def test_it_verifies_a_clean_chain(sessions: Sessions, vault: Vault) -> None:
    await write_log(sessions, vault)
    assert await check(sessions, vault) == ok(10)
    exported = await export_head(sessions)
    assert exported[0] == 10
    assert await check(sessions, vault, expected_head=exported) == ok(10)


async def test_verifying_gives_the_event_loop_a_turn_between_batches(
    sessions: Sessions, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In `amparo serve` the escalation engine shares the loop: 50,000 entries verified in
    one go held it for 1.3 s."""
    await write_log(sessions, vault)
    monkeypatch.setattr(audit, "BATCH", 2)
    turns, verifying = 0, True

    async def other_work() -> None:
        nonlocal turns
        while verifying:
            await asyncio.sleep(0)
            turns += 1

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    start = turns
    verdict = await check(sessions, vault)
    during, verifying = turns - start, False
    await other
    assert verdict == ok(10) and during >= 4  # 5 full batches of 2


async def test_it_chains_hmac_of_previous_hash_and_canonical_json(
    sessions: Sessions, vault: Vault
) -> None:
    await write_log(sessions, vault, 2)
    async with sessions() as s:
        first, second = (await s.execute(select(ENTRIES).order_by(ENTRIES.c.seq))).all()
    entry = {
        "seq": 1,
        "at": "2026-03-29T10:01:00.123456+00:00",
        "org": str(ORG),
        "actor": "responder-ñ1",
        "action": "view",
        "target": "alert:1",
        "detail": {"n": 1, "ids": [1, 2], "ratio": 0.1, "nested": {"a": [None], "b": 1}},
    }
    body = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert first.prev_hash == GENESIS
    assert first.hash == vault.audit_mac(GENESIS, body)
    assert second.prev_hash == first.hash


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("detail", {"n": 99}),
        ("actor", "someone-else"),
        ("at", T0 + timedelta(days=1)),
        ("org_id", None),
        ("hash", b"\x01" * 32),
    ],
    ids=["detail", "actor", "at", "org_id", "hash"],
)
async def test_it_names_an_altered_entry(
    sessions: Sessions, vault: Vault, column: str, value: Any
) -> None:
    await write_log(sessions, vault)
    await run(sessions, update(ENTRIES).where(ENTRIES.c.seq == 7).values({column: value}))
    assert await check(sessions, vault) == bad(7, "entry 7 was altered", checked=6)


@pytest.mark.parametrize("seq", [5, 1])
async def test_it_names_a_deleted_entry(sessions: Sessions, vault: Vault, seq: int) -> None:
    await write_log(sessions, vault)
    await run(sessions, delete(ENTRIES).where(ENTRIES.c.seq == seq))
    assert await check(sessions, vault) == bad(seq, f"entry {seq} is missing (deleted)", seq - 1)


async def test_it_names_a_deletion_hidden_by_renumbering(sessions: Sessions, vault: Vault) -> None:
    await write_log(sessions, vault)
    await run(
        sessions,
        delete(ENTRIES).where(ENTRIES.c.seq == 5),
        *(update(ENTRIES).where(ENTRIES.c.seq == n).values(seq=n - 1) for n in range(6, 11)),
    )
    assert await check(sessions, vault) == bad(5, "entry 5 is out of order", checked=4)


async def swap(sessions: Sessions, i: int, j: int, columns: list[str]) -> None:
    """Swap ``columns`` of rows i and j with raw UPDATEs, parking row i to dodge unique keys."""
    async with transaction(sessions) as s:
        a, b = [
            (await s.execute(select(ENTRIES).where(ENTRIES.c.seq == n))).one()._asdict()
            for n in (i, j)
        ]
        parked = ENTRIES.c.seq == -1
        await s.execute(
            update(ENTRIES).where(ENTRIES.c.seq == i).values(seq=-1, prev_hash=b"\xff" * 32)
        )
        await s.execute(
            update(ENTRIES).where(ENTRIES.c.seq == j).values({c: a[c] for c in columns})
        )
        restore = {"seq": a["seq"], "prev_hash": a["prev_hash"]} | {c: b[c] for c in columns}
        await s.execute(update(ENTRIES).where(parked).values(restore))


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        (CONTENT, "entry 3 was altered"),
        ([*CONTENT, "prev_hash", "hash"], "entry 3 is out of order"),
        (["prev_hash", "hash"], "entry 3 is out of order"),
        (["seq"], "entry 3 is out of order"),
    ],
    ids=["content", "whole-row", "hashes", "seq"],
)
async def test_it_names_the_first_of_two_swapped_entries(
    sessions: Sessions, vault: Vault, columns: list[str], reason: str
) -> None:
    await write_log(sessions, vault)
    await swap(sessions, 3, 8, columns)
    async with sessions() as s:
        seqs = (await s.execute(select(ENTRIES.c.seq).order_by(ENTRIES.c.seq))).scalars().all()
    assert seqs == list(range(1, 11))
    assert await check(sessions, vault) == bad(3, reason, checked=2)


async def test_it_detects_truncation_only_against_an_exported_head(
    sessions: Sessions, vault: Vault
) -> None:
    await write_log(sessions, vault)
    exported = await export_head(sessions)
    await run(sessions, delete(ENTRIES).where(ENTRIES.c.seq > 7))
    # A cut tail leaves a valid chain: the exported head is the only witness.
    assert await check(sessions, vault) == ok(7)
    assert await check(sessions, vault, expected_head=exported) == bad(
        8, "the log ends at 7 but the exported head is 10 (truncated)", checked=7
    )


async def test_it_detects_a_tail_rewritten_after_the_export(
    sessions: Sessions, vault: Vault
) -> None:
    await write_log(sessions, vault)
    exported = await export_head(sessions)
    await run(sessions, delete(ENTRIES).where(ENTRIES.c.seq > 7))
    async with transaction(sessions) as s:
        for _ in range(3):
            await record(s, vault, actor="insider", action="view")
    assert (await check(sessions, vault)).ok
    assert await check(sessions, vault, expected_head=exported) == bad(
        10, "head hash differs from the exported head", checked=9
    )


async def test_it_accepts_a_log_that_grew_since_the_export(
    sessions: Sessions, vault: Vault
) -> None:
    await write_log(sessions, vault, 4)
    exported = await export_head(sessions)
    async with transaction(sessions) as s:
        await record(s, vault, actor="responder", action="export")
    assert await check(sessions, vault, expected_head=exported) == ok(5)


async def test_it_rejects_a_chain_rebuilt_without_the_key(
    sessions: Sessions, vault: Vault
) -> None:
    await write_log(sessions, vault)
    await run(sessions, delete(ENTRIES))
    await write_log(sessions, Vault(Keyring.generate()))
    assert await check(sessions, vault) == bad(1, "entry 1 was altered", checked=0)


async def test_it_serialises_concurrent_writers(sessions: Sessions, vault: Vault) -> None:
    async def one(i: int) -> int:
        async with transaction(sessions) as s:
            await asyncio.sleep(0)
            entry = await record(s, vault, actor=f"responder-{i}", action="login")
            await asyncio.sleep(0)
            return entry.seq

    seqs = await asyncio.gather(*(one(i) for i in range(20)))
    assert sorted(seqs) == list(range(1, 21))
    assert await check(sessions, vault) == ok(20)


async def test_it_retries_when_another_writer_took_the_seq(
    sessions: Sessions, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write_log(sessions, vault, 3)
    stale = await export_head(sessions)
    await write_log(sessions, vault, 2)  # entries 4 and 5 land after the stale read
    reads: list[int] = []
    real_head = audit.head

    async def racing_head(session: AsyncSession) -> tuple[int, bytes] | None:
        reads.append(1)
        return stale if len(reads) <= 2 else await real_head(session)

    monkeypatch.setattr(audit, "head", racing_head)
    async with transaction(sessions) as s:
        entry = await record(s, vault, actor="responder", action="role_change")
    assert (entry.seq, len(reads)) == (6, 3)
    assert await check(sessions, vault) == ok(6)


async def test_it_gives_up_after_bounded_retries(
    sessions: Sessions, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write_log(sessions, vault, 3)
    reads: list[int] = []

    async def stale_head(session: AsyncSession) -> tuple[int, bytes] | None:
        reads.append(1)
        return None  # always behind: every insert collides with entry 1

    monkeypatch.setattr(audit, "head", stale_head)
    async with transaction(sessions) as s:
        with pytest.raises(AuditBusyError):
            await record(s, vault, actor="responder", action="login")
    assert len(reads) == audit.ATTEMPTS
    assert await check(sessions, vault) == ok(3)


async def test_it_rolls_back_with_the_callers_transaction(
    sessions: Sessions, vault: Vault
) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as s:
            await record(s, vault, actor="responder", action="export")
            raise RuntimeError("the audited action failed")
    async with sessions() as s:
        assert await head(s) is None


@pytest.mark.parametrize(
    "detail",
    [{"when": object()}, {"ratio": float("nan")}, {"ids": {1, 2}}, {"when": datetime.now(UTC)}],
)
async def test_it_rejects_detail_that_is_not_json(
    sessions: Sessions, vault: Vault, detail: dict[str, Any]
) -> None:
    async with transaction(sessions) as s:
        with pytest.raises(ValueError, match="JSON"):
            await record(s, vault, actor="responder", action="export", detail=detail)
    async with sessions() as s:
        assert await head(s) is None
