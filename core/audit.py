"""The tamper-evident audit trail (SECURITY.md R23): ``h_i = HMAC(k, h_{i-1} || json(e_i))``.

``record`` appends an entry inside the caller's transaction; ``verify`` walks the chain and
names the first bad entry; ``head`` is the (seq, hash) to export regularly to a separate
append-only store, since truncating the tail is only detectable against an exported head.

The chain and its ``seq`` are global, for whoever runs the server (`amparo audit`). An
organisation must learn nothing of another's activity, and the gaps in the global ``seq``
between its own entries would tell it how much the others do: what an organisation sees
(``org_entries``, ``verify_for``) numbers its own entries 1, 2, 3... with no gaps, and never
shows a global ``seq``, count or position.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import Vault
from core.models.audit import AuditEntry

GENESIS = bytes(32)  # prev_hash of entry 1
ATTEMPTS = 20
BATCH = 250  # entries checked between two turns of the event loop (~10 ms)
_PG_LOCK = 0x616D_7061_726F_2D61  # b"amparo-a": the advisory lock serialising audit writers


class AuditBusyError(Exception):
    """Concurrent writers kept taking the next seq; transient, so retry the whole transaction."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int  # entries that verified before the first bad one (all of them when ok)
    first_bad_seq: int | None
    reason: str | None


@dataclass(frozen=True)
class OrgVerdict:
    """The chain's verdict as told to one organisation: ``first_bad`` is the organisation's own
    number of the first bad entry when that entry is one of its own, else None (another
    organisation's entry, an operator's, or a deleted one: only `amparo audit verify` says)."""

    ok: bool
    first_bad: int | None


def canonical(e: AuditEntry | Row[Any]) -> bytes:
    """The bytes an entry's HMAC covers; seq is inside, so a moved row no longer verifies."""
    entry = {
        "seq": e.seq,
        "at": e.at.astimezone(UTC).isoformat(),
        "org": None if e.org_id is None else str(e.org_id),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
    }
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


async def head(session: AsyncSession) -> tuple[int, bytes] | None:
    """The last (seq, hash), or None for an empty log."""
    stmt = select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    row = (await session.execute(stmt)).first()
    return None if row is None else (row.seq, row.hash)


async def record(
    session: AsyncSession,
    vault: Vault,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    org_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Append one entry within the caller's transaction (which must be READ COMMITTED).

    ``detail`` holds ids and metadata only, NEVER message content, reports, names or phone
    numbers (ASVS 16.3, 16.4.2-16.4.3): callers are responsible for that. Detail that is not
    JSON-serialisable (or holds NaN/infinity) raises ValueError before anything is written.
    """
    if len(actor) > 120 or len(action) > 60 or (target is not None and len(target) > 120):
        raise ValueError("audit actor, action or target is too long")
    try:
        # Normalised as the JSON column will return it, so the stored entry verifies.
        clean = json.loads(json.dumps(detail or {}, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError("audit detail must be JSON-serialisable") from exc
    if not isinstance(clean, dict):
        raise ValueError("audit detail must be a dict")
    if now is not None and now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC)")
    at = (now or datetime.now(UTC)).astimezone(UTC)
    await session.flush()  # the caller's own errors must not look like a seq collision below
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    elif dialect == "sqlite":
        # A no-op write makes the driver BEGIN and takes SQLite's write lock (waiting on the busy
        # timeout) before the tail is read. Reading first would let a concurrent commit turn the
        # insert into an immediate "database is locked" (a stale WAL snapshot cannot upgrade),
        # and SAVEPOINT outside a real transaction would RELEASE as a COMMIT.
        await session.execute(text("UPDATE audit_entries SET seq = seq WHERE 0"))
    for _ in range(ATTEMPTS):
        last = await head(session)
        seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
        entry = AuditEntry(actor=actor, action=action, target=target, org_id=org_id, detail=clean)
        entry.seq, entry.at, entry.prev_hash = seq, at, prev
        entry.hash = vault.audit_mac(prev, canonical(entry))
        try:
            async with session.begin_nested():
                session.add(entry)
        except IntegrityError:
            continue  # a concurrent writer took this seq or prev_hash: re-read the tail
        return entry
    raise AuditBusyError(f"could not append to the audit log after {ATTEMPTS} attempts")


def _check(row: Row[Any], seq: int, prev: bytes, vault: Vault) -> str | None:
    if row.seq > seq:
        return f"entry {seq} is missing (deleted)"
    if row.seq < seq or not hmac.compare_digest(row.prev_hash, prev):
        return f"entry {row.seq} is out of order"
    if not hmac.compare_digest(vault.audit_mac(prev, canonical(row)), row.hash):
        return f"entry {row.seq} was altered"  # or the chain was rebuilt without the key
    return None


async def verify(
    session: AsyncSession, vault: Vault, *, expected_head: tuple[int, bytes] | None = None
) -> Verdict:
    """Walk the chain in seq order, in batches, and name the first bad entry.

    Without ``expected_head`` a log whose tail was deleted still verifies: only the head
    exported earlier reveals truncation (or a chain rebuilt by someone holding the key).
    The event loop gets a turn after each batch: in `amparo serve` it also runs the
    escalation engine, and 50,000 entries in one go held it for 1.3 s.
    """
    seq, prev, after = 1, GENESIS, None
    while True:
        stmt = select(AuditEntry.__table__).order_by(AuditEntry.seq).limit(BATCH)
        if after is not None:
            stmt = stmt.where(AuditEntry.seq > after)
        rows = (await session.execute(stmt)).all()
        for row in rows:
            reason = _check(row, seq, prev, vault)
            bad = min(row.seq, seq)
            if reason is None and expected_head is not None and row.seq == expected_head[0]:
                if not hmac.compare_digest(row.hash, expected_head[1]):
                    reason = "head hash differs from the exported head"
            if reason is not None:
                return Verdict(ok=False, checked=seq - 1, first_bad_seq=bad, reason=reason)
            seq, prev, after = seq + 1, row.hash, row.seq
        if len(rows) < BATCH:
            break
        await asyncio.sleep(0)
    last = seq - 1
    if expected_head is not None and expected_head[0] > last:
        reason = f"the log ends at {last} but the exported head is {expected_head[0]} (truncated)"
        return Verdict(ok=False, checked=last, first_bad_seq=seq, reason=reason)
    return Verdict(ok=True, checked=last, first_bad_seq=None, reason=None)


class OrgEntry(NamedTuple):
    """An entry as its organisation sees it: ``number`` counts its own entries, no ``seq``."""

    number: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


async def org_entries(
    session: AsyncSession, org_id: uuid.UUID, *, before: int | None = None, limit: int = 100
) -> list[OrgEntry]:
    """One organisation's entries, newest first, numbered by the organisation's own count,
    never the global ``seq`` (not even selected): the global gaps between them would show
    how active the other organisations are. ``before`` is a number from an earlier page.
    The count and the page's offset read the index (org_id, seq) alone; the page is bounded
    by the last seq counted, so an entry written meanwhile does not shift the numbers."""
    mine = AuditEntry.org_id == org_id
    stats = select(func.count(), func.max(AuditEntry.seq)).where(mine)
    total, last = (await session.execute(stats)).one()
    top = total if before is None else min(total, before - 1)
    if top <= 0:
        return []
    shown = (AuditEntry.at, AuditEntry.actor, AuditEntry.action, AuditEntry.target)
    page = (
        select(*shown, AuditEntry.detail)
        .where(mine, AuditEntry.seq <= last)
        .order_by(AuditEntry.seq.desc())
        .offset(total - top)
        .limit(limit)
    )
    rows = (await session.execute(page)).all()
    return [OrgEntry(top - i, *row) for i, row in enumerate(rows)]


async def verify_for(session: AsyncSession, vault: Vault, org_id: uuid.UUID) -> OrgVerdict:
    """Walk the whole chain (its tamper evidence is the whole chain's) and tell one
    organisation only what concerns it: intact or not, and which of its own entries is the
    first bad one when it is one of them. Never a global seq, a count or another
    organisation's position."""
    verdict = await verify(session, vault)
    if verdict.ok or verdict.first_bad_seq is None:
        return OrgVerdict(ok=verdict.ok, first_bad=None)
    owner = await session.scalar(
        select(AuditEntry.org_id).where(AuditEntry.seq == verdict.first_bad_seq)
    )
    if owner != org_id:
        return OrgVerdict(ok=False, first_bad=None)
    own = (
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.org_id == org_id, AuditEntry.seq <= verdict.first_bad_seq)
    )
    return OrgVerdict(ok=False, first_bad=await session.scalar(own))
