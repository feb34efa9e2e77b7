"""API tokens for integrations (external case systems), shown once and stored hashed."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from api import errors
from api.deps import AdminDep, NowDep, SessionDep, VaultDep, after_commit, token_cache
from api.errors import N_, ApiError
from core import api_tokens, audit, auth
from core.models import ApiToken

router = APIRouter(prefix="/tokens", tags=["tokens"])

BAD_SCOPE = N_("a token cannot hold this scope")


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    scopes: list[str] = Field(min_length=1, max_length=20)


class TokenOut(BaseModel):
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewToken(TokenOut):
    token: str  # shown once


def out(row: ApiToken) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        scopes=list(row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


@router.get("")
async def list_tokens(principal: AdminDep, session: SessionDep) -> list[TokenOut]:
    """The organisation's API tokens (never the tokens themselves)."""
    rows = await session.execute(
        select(ApiToken).where(ApiToken.org_id == principal.org_id).order_by(ApiToken.created_at)
    )
    return [out(r) for r in rows.scalars()]


@router.post("", status_code=201, responses={400: {}})
async def create_token(
    body: TokenIn, principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> NewToken:
    """Create a token with the given scopes; the token is shown in this answer only."""
    if not set(body.scopes) <= auth.TOKEN_SCOPES:
        raise ApiError(400, BAD_SCOPE, extra={"allowed": sorted(auth.TOKEN_SCOPES)})
    row, plaintext = await api_tokens.create_token(
        session, org_id=principal.org_id, name=body.name, scopes=body.scopes, now=now
    )
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="token.create",
        target=str(row.id),
        org_id=principal.org_id,
        detail={"scopes": row.scopes},
        now=now,
    )
    return NewToken(**out(row).model_dump(), token=plaintext)


@router.delete("/{token_id}", status_code=204, responses={404: {}})
async def revoke_token(
    token_id: uuid.UUID,
    request: Request,
    principal: AdminDep,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> None:
    """Revoke a token; it stops working at once."""
    row = await session.get(ApiToken, token_id)
    if row is None or row.org_id != principal.org_id:
        raise ApiError(404, errors.NOT_FOUND)
    if row.revoked_at is None:
        row.revoked_at = now
        # Dropped now and again once committed: no request can keep using it from the cache.
        cache = token_cache(request)
        cache.revoked()
        after_commit(session, cache.revoked)
        await audit.record(
            session,
            vault,
            actor=principal.actor,
            action="token.revoke",
            target=str(row.id),
            org_id=principal.org_id,
            now=now,
        )
