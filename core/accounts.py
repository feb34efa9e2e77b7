"""Creating organisations and responders (used by the CLI now, by the desk API later)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, org_keys
from core.crypto import Vault, generate_org_keypair, protect_private_key
from core.models import Organisation, Responder, Role
from core.security import generate_password, hash_password, new_totp_secret, totp_uri

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,119}$")
MIN_PASSPHRASE = 12


class AccountError(Exception):
    """A request about accounts that cannot be granted; ``code`` says which rule."""

    def __init__(self, code: str, **params: str) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


async def find_org(session: AsyncSession, name_or_id: str) -> Organisation:
    try:
        query = select(Organisation).where(Organisation.id == uuid.UUID(name_or_id))
    except ValueError:
        query = select(Organisation).where(Organisation.name == name_or_id)
    org = (await session.execute(query)).scalar_one_or_none()
    if org is None:
        raise AccountError("unknown_org", org=name_or_id)
    return org


async def create_org(
    session: AsyncSession,
    vault: Vault,
    name: str,
    passphrase: str | None = None,
    *,
    fast_kdf: bool = False,
    key: tuple[bytes, bytes] | None = None,
) -> Organisation:
    """A new organisation with ``key`` (public key, private key protected under a passphrase,
    made on a responder's machine: ``make_org_key``), or a key pair made here, the private
    key kept only under ``passphrase``."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise AccountError("bad_org_name")
    if key is None and len(passphrase or "") < MIN_PASSPHRASE:
        raise AccountError("short_passphrase", min=str(MIN_PASSPHRASE))
    if (await session.execute(select(Organisation.id).where(Organisation.name == name))).first():
        raise AccountError("duplicate_org", org=name)
    if key is None:
        assert passphrase is not None
        key = make_org_key(passphrase, fast_kdf=fast_kdf)
    else:
        try:
            org_keys.check_upload(*key)  # its shape: only a passphrase opens it
        except org_keys.KeyUploadError:
            raise AccountError("bad_org_key") from None
    public, protected = key
    org = Organisation(
        id=uuid.uuid4(), name=name, public_key=public, protected_private_key=protected
    )
    session.add(org)
    try:
        await session.flush()
    except IntegrityError:
        raise AccountError("duplicate_org", org=name) from None
    await audit.record(
        session, vault, actor="cli", action="org.create", target=str(org.id), org_id=org.id
    )
    return org


def make_org_key(passphrase: str, *, fast_kdf: bool = False) -> tuple[bytes, bytes]:
    """A new organisation key pair: (public key, private key protected under ``passphrase``)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise AccountError("short_passphrase", min=str(MIN_PASSPHRASE))
    public, private = generate_org_keypair()
    limits = {"opslimit": 2, "memlimit": 8 * 1024 * 1024} if fast_kdf else {}
    return public, protect_private_key(private, passphrase, **limits)


@dataclass(frozen=True)
class NewResponder:
    responder: Responder
    password: str  # shown once, to be changed at first login
    totp_uri: str  # shown once


async def create_responder(
    session: AsyncSession, vault: Vault, org: Organisation, username: str, role: Role
) -> NewResponder:
    if not USERNAME.match(username):
        raise AccountError("bad_username")
    exists = await session.execute(select(Responder.id).where(Responder.username == username))
    if exists.first():
        raise AccountError("duplicate_user", user=username)
    password, secret = generate_password(), new_totp_secret()
    responder = Responder(
        id=uuid.uuid4(),
        org_id=org.id,
        username=username,
        role=role,
        password_hash=hash_password(password),
    )
    responder.put(vault, "totp_secret_enc", secret)
    session.add(responder)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent create took the name between check and insert
        raise AccountError("duplicate_user", user=username) from None
    await audit.record(
        session,
        vault,
        actor="cli",
        action="responder.create",
        target=str(responder.id),
        org_id=org.id,
        detail={"role": role.value},
    )
    return NewResponder(responder, password, totp_uri(secret, username))
