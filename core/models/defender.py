"""Defenders, the channel addresses that reach people, and defenders' trusted contacts."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, Encrypted


class DefenderStatus(StrEnum):
    onboarding = "onboarding"
    active = "active"
    paused = "paused"
    deleted = "deleted"
    # "Deleted" under duress (core.defenders.hide): the bot answers the phone as after a real
    # deletion, the desk keeps everything and can restore it.
    hidden = "hidden"


# Those the bot answers as strangers (flows.store), and whose files it never fetches.
GONE = (DefenderStatus.deleted, DefenderStatus.hidden)


class Defender(Encrypted, CreatedMixin, Base):
    """A defender is known by a generated handle; no real name is ever required."""

    __tablename__ = "defenders"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    handle: Mapped[str] = mapped_column(String(40), unique=True)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    status: Mapped[DefenderStatus] = mapped_column(default=DefenderStatus.onboarding)
    discreet: Mapped[bool] = mapped_column(default=False)
    # Argon2id with a pepper from the master key file (SECURITY.md R10).
    cancel_pin_hash: Mapped[str | None] = mapped_column(String(200))
    duress_pin_hash: Mapped[str | None] = mapped_column(String(200))
    failed_pins: Mapped[int] = mapped_column(default=0)
    pin_failed_at: Mapped[datetime | None]  # the last wrong PIN (core.pins.count)
    settings_enc: Mapped[bytes | None] = mapped_column(LargeBinary)  # code phrases and the like
    last_checkin_at: Mapped[datetime | None]  # overwritten: no history (R24)
    policy_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("escalation_policies.id", ondelete="SET NULL")
    )


class ChannelAddress(Encrypted, CreatedMixin, Base):
    """A chat id, phone number or Signal UUID: encrypted, found through a blind index."""

    __tablename__ = "channel_addresses"

    channel: Mapped[str] = mapped_column(String(24))
    value_enc: Mapped[bytes] = mapped_column(LargeBinary)
    blind_index: Mapped[bytes] = mapped_column(LargeBinary(32))
    defender_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("defenders.id", ondelete="CASCADE"), index=True
    )
    responder_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("responders.id", ondelete="CASCADE"), index=True
    )
    preference: Mapped[int] = mapped_column(default=0)  # lower is tried first
    blocked_at: Mapped[datetime | None]  # a permanent delivery failure was seen

    __table_args__ = (UniqueConstraint("channel", "blind_index"),)


class Consent(StrEnum):
    invited = "invited"
    confirmed = "confirmed"
    declined = "declined"
    revoked = "revoked"  # the contact asked to stop: never told anything again
    # The defender removed them: told nothing more but the all-clear of an alert that had
    # reached them before (core.follow_ups.closing), at the address it reached them at.
    removed = "removed"
    # Added under duress (flows.settings): looks like an invited, then (with an address) a
    # confirmed contact to everyone, but is never selected as a recipient (core.recipients).
    shadow = "shadow"


class TrustedContact(Encrypted, CreatedMixin, Base):
    """Counted only once the contact confirms in the bot; they may decline."""

    __tablename__ = "trusted_contacts"

    defender_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("defenders.id", ondelete="CASCADE"), index=True
    )
    label_enc: Mapped[bytes | None] = mapped_column(LargeBinary)  # the defender's name for them
    consent: Mapped[Consent] = mapped_column(default=Consent.invited)
    invite_index: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    address_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("channel_addresses.id", ondelete="SET NULL"), index=True
    )
    responded_at: Mapped[datetime | None]
    locale: Mapped[str | None] = mapped_column(String(16))  # None: the defender's language
