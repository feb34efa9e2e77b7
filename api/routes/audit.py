"""The organisation's audit trail, and a check of the whole hash chain.

The chain's ``seq`` is global; an organisation sees its own entries numbered 1, 2, 3... with no
gaps (``seq`` here), and a verdict naming only its own entries: nothing of how active the other
organisations are. The whole chain, global seq included, is `amparo audit verify`'s."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import AdminDep, SessionDep, VaultDep
from core import audit

router = APIRouter(prefix="/audit", tags=["audit"])


class EntryOut(BaseModel):
    seq: int = Field(
        description="The entry's number among the organisation's own entries (1, 2, 3...)"
    )
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
    first_bad_seq: int | None = Field(
        description="The organisation's own number of the first bad entry; null when intact, "
        "or when the chain breaks elsewhere (the server's operator locates it)"
    )


@router.get("")
async def list_entries(
    principal: AdminDep,
    session: SessionDep,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EntryPage:
    """The organisation's entries, newest first (ids and metadata, never content), numbered
    among its own entries only."""
    rows = await audit.org_entries(session, principal.org_id, before=before_seq, limit=limit + 1)
    following = rows[limit - 1].number if len(rows) > limit else None
    return EntryPage(
        items=[
            EntryOut(
                seq=e.number,
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
async def verify(principal: AdminDep, session: SessionDep, vault: VaultDep) -> VerifyOut:
    """Walk the whole hash chain; names the first altered, deleted or reordered entry when it
    is one of the organisation's own (by its own number), never another organisation's."""
    verdict = await audit.verify_for(session, vault, principal.org_id)
    return VerifyOut(ok=verdict.ok, first_bad_seq=verdict.first_bad)
