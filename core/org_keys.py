"""Organisation key pairs: the public key seals, the private key is stored only under a
passphrase chosen on a responder's machine. Rotation keeps every earlier pair, so items sealed
before it still open (the responder's side tries the key version recorded with the item, or
each key in turn for items that record none)."""

from __future__ import annotations

import uuid
from datetime import datetime

from nacl import pwhash, secret
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.crypto import Vault
from core.models import Organisation, OrgKey

PUBLIC_KEY_BYTES = 32
# "P1", u32 opslimit, u64 memlimit, salt, then a secret box holding the 32-byte private key.
PROTECTED_BYTES = 2 + 12 + pwhash.argon2id.SALTBYTES + secret.SecretBox.NONCE_SIZE + 16 + 32
MIN_OPSLIMIT = pwhash.argon2id.OPSLIMIT_INTERACTIVE
MIN_MEMLIMIT = pwhash.argon2id.MEMLIMIT_INTERACTIVE


class KeyUploadError(Exception):
    """The uploaded key material is not what Amparo expects; ``code`` says which rule."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def check_upload(public_key: bytes, protected: bytes) -> None:
    """Shape checks only: the server cannot (and must not) open the protected private key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise KeyUploadError("public_key")
    if len(protected) != PROTECTED_BYTES or protected[:2] != b"P1":
        raise KeyUploadError("protected_private_key")
    opslimit = int.from_bytes(protected[2:6], "big")
    memlimit = int.from_bytes(protected[6:14], "big")
    if opslimit < MIN_OPSLIMIT or memlimit < MIN_MEMLIMIT:
        raise KeyUploadError("weak_kdf")


async def _ensure_history(session: AsyncSession, org: Organisation) -> list[OrgKey]:
    """The key history; an organisation created before rotation existed gets its version 1."""
    rows = list(
        (
            await session.execute(
                select(OrgKey).where(OrgKey.org_id == org.id).order_by(OrgKey.version)
            )
        ).scalars()
    )
    if not rows and org.public_key is not None and org.protected_private_key is not None:
        first = OrgKey(
            id=uuid.uuid4(),
            org_id=org.id,
            version=1,
            public_key=org.public_key,
            protected_private_key=org.protected_private_key,
            created_at=org.created_at,
        )
        session.add(first)
        await session.flush()
        rows = [first]
    return rows


async def current_version(session: AsyncSession, org: Organisation) -> int:
    version = await session.execute(
        select(func.max(OrgKey.version)).where(OrgKey.org_id == org.id)
    )
    return int(version.scalar_one_or_none() or 1)


async def history(session: AsyncSession, org: Organisation) -> list[OrgKey]:
    return await _ensure_history(session, org)


async def rotate(
    session: AsyncSession,
    vault: Vault,
    *,
    org: Organisation,
    public_key: bytes,
    protected: bytes,
    actor: str,
    now: datetime,
) -> OrgKey:
    """Make the uploaded pair current; earlier pairs stay, retired, for older sealed items."""
    check_upload(public_key, protected)
    rows = await _ensure_history(session, org)
    if any(r.public_key == public_key for r in rows):
        raise KeyUploadError("reused")
    await session.execute(
        update(OrgKey)
        .where(OrgKey.org_id == org.id, OrgKey.retired_at.is_(None))
        .values(retired_at=now)
        .execution_options(synchronize_session=False)
    )
    key = OrgKey(
        id=uuid.uuid4(),
        org_id=org.id,
        version=(rows[-1].version + 1) if rows else 1,
        public_key=public_key,
        protected_private_key=protected,
        created_at=now,
    )
    session.add(key)
    org.public_key, org.protected_private_key = public_key, protected
    await session.flush()
    await audit.record(
        session,
        vault,
        actor=actor,
        action="org.key_change",
        target=str(org.id),
        org_id=org.id,
        detail={"version": key.version},
        now=now,
    )
    return key
