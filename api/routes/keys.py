"""The organisation's key pairs: public keys seal, private keys travel only under a passphrase."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import AdminDep, NowDep, ReportsRead, SessionDep, VaultDep
from api.errors import N_, ApiError
from core import audit, org_keys
from core.models import Organisation
from core.org_keys import KeyUploadError

router = APIRouter(prefix="/org/keys", tags=["keys"])

BAD_KEY = N_(
    "upload a 32-byte public key and the private key protected under a passphrase, "
    "both in base64, made on your own machine"
)
REUSED_KEY = N_("this public key was used before; generate a new key pair")


class KeyOut(BaseModel):
    version: int
    public_key: str
    protected_private_key: str  # open it with the passphrase, on your own machine only
    created_at: datetime
    retired_at: datetime | None
    current: bool


class KeyIn(BaseModel):
    public_key: str = Field(min_length=1, max_length=200)
    protected_private_key: str = Field(min_length=1, max_length=400)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _org(session: SessionDep, org_id: uuid.UUID) -> Organisation:
    org = await session.get(Organisation, org_id)
    assert org is not None  # the principal's organisation exists while it is logged in
    return org


@router.get("")
async def list_keys(
    principal: ReportsRead, session: SessionDep, vault: VaultDep, now: NowDep
) -> list[KeyOut]:
    """Every key pair, newest last; older ones open items sealed before a rotation."""
    org = await _org(session, principal.org_id)
    keys = await org_keys.history(session, org)
    await audit.record(  # the protected private keys leave the server: who took them is kept
        session,
        vault,
        actor=principal.actor,
        action="org.keys_view",
        target=str(org.id),
        org_id=org.id,
        now=now,
    )
    return [
        KeyOut(
            version=k.version,
            public_key=b64(k.public_key),
            protected_private_key=b64(k.protected_private_key),
            created_at=k.created_at,
            retired_at=k.retired_at,
            current=k.public_key == org.public_key,
        )
        for k in keys
    ]


@router.post("", status_code=201, responses={400: {}, 409: {}})
async def rotate_key(
    body: KeyIn, principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> KeyOut:
    """Rotate: the uploaded pair becomes current, earlier pairs stay for older sealed items."""
    try:
        public = base64.b64decode(body.public_key, validate=True)
        protected = base64.b64decode(body.protected_private_key, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, BAD_KEY) from None
    org = await _org(session, principal.org_id)
    try:
        key = await org_keys.rotate(
            session,
            vault,
            org=org,
            public_key=public,
            protected=protected,
            actor=principal.actor,
            now=now,
        )
    except KeyUploadError as exc:
        raise ApiError(
            409 if exc.code == "reused" else 400, REUSED_KEY if exc.code == "reused" else BAD_KEY
        ) from None
    return KeyOut(
        version=key.version,
        public_key=b64(key.public_key),
        protected_private_key=b64(key.protected_private_key),
        created_at=key.created_at,
        retired_at=None,
        current=True,
    )
