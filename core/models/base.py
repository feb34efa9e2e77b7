"""Declarative base, naming convention and the column types every model shares."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    Integer,
    LargeBinary,
    MetaData,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.crypto import CryptoError, Vault

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is UTC-aware on both backends (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# An autoincrementing 64-bit key; SQLite only autoincrements an INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        # Enums are stored as short strings: no database enum types to migrate.
        enum.Enum: Enum(enum.Enum, native_enum=False, length=24),
    }


class IdMixin:
    """A random UUID primary key, assigned in Python so it can bind ciphertexts before flush."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)

    def ensure_id(self) -> uuid.UUID:
        if self.id is None:
            self.id = uuid.uuid4()
        return self.id


class CreatedMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Encrypted(IdMixin):
    """A row with its own data key; ``put``/``get`` encrypt the ``*_enc`` columns with it.

    The wrapped data key lives in the row; the key that unwraps it never does. Shredding the
    key (``shred``) makes every ciphertext of the row unreadable in the database. A backup
    taken before still holds the wrapped key, which the master key unwraps: backups must not
    outlive the retention periods, or, after a rotation (``amparo keys rotate`` rewraps the
    live rows), the retired master key version must be destroyed for them to become
    unreadable too.
    """

    dek: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)

    def _data_key(self, vault: Vault) -> bytes:
        row_id = self.ensure_id()
        table: str = self.__tablename__  # type: ignore[attr-defined]
        if self.dek is None:
            key = vault.new_dek()
            self.dek = vault.wrap_dek(key, table, row_id)
            return key
        return vault.unwrap_dek(self.dek, table, row_id)

    def put(self, vault: Vault, column: str, value: str | bytes | None) -> None:
        if value is None:
            setattr(self, column, None)
            return
        raw = value.encode() if isinstance(value, str) else value
        key = self._data_key(vault)
        setattr(self, column, vault.encrypt(key, self.__tablename__, column, self.id, raw))  # type: ignore[attr-defined]

    def get(self, vault: Vault, column: str) -> bytes | None:
        blob: bytes | None = getattr(self, column)
        if blob is None:
            return None
        if self.dek is None:
            raise CryptoError(f"{column} of row {self.id} was shredded")
        key = self._data_key(vault)
        return vault.decrypt(key, self.__tablename__, column, self.id, blob)  # type: ignore[attr-defined]

    def get_text(self, vault: Vault, column: str) -> str | None:
        raw = self.get(vault, column)
        return None if raw is None else raw.decode()

    def shred(self, *columns: str) -> None:
        for column in columns:
            setattr(self, column, None)
        self.dek = None
