"""The organisation's audit trail, and a check of the whole hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import AdminDep, SessionDep, VaultDep
from core import audit
from core.models import AuditEntry

router = APIRouter(prefix="/audit", tags=["audit"])


class EntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


class EntryPage(BaseModel):
    items: list[EntryOut]
    next_cursor: int | None  # pass as before_seq


class VerifyOut(BaseModel):
    ok: bool
    first_bad_seq: int | None


@router.get("")
async def list_entries(
    principal: AdminDep,
    session: SessionDep,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EntryPage:
    """The organisation's entries, newest first (ids and metadata, never content)."""
    query = select(AuditEntry).where(AuditEntry.org_id == principal.org_id)
    if before_seq is not None:
        query = query.where(AuditEntry.seq < before_seq)
    rows = list(
        (await session.execute(query.order_by(AuditEntry.seq.desc()).limit(limit + 1))).scalars()
    )
    following = rows[limit - 1].seq if len(rows) > limit else None
    return EntryPage(
        items=[
            EntryOut(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                action=e.action,
                target=e.target,
                detail=e.detail,
            )
            for e in rows[:limit]
        ],
        next_cursor=following,
    )


@router.get("/verify")
async def verify(_principal: AdminDep, session: SessionDep, vault: VaultDep) -> VerifyOut:
    """Walk the whole hash chain; names the first altered, deleted or reordered entry."""
    verdict = await audit.verify(session, vault)
    return VerifyOut(ok=verdict.ok, first_bad_seq=verdict.first_bad_seq)
