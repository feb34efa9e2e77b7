"""The data model; importing this package registers every table on ``Base.metadata``."""

from core.models.alert import (
    DO_NOT_CONTACT,
    Alert,
    AlertEvent,
    AlertKind,
    AlertState,
    Priority,
    QueueVersion,
)
from core.models.audit import AuditEntry
from core.models.base import Base, Encrypted, utcnow
from core.models.broadcast import Broadcast, BroadcastRecipient
from core.models.callback import CallbackToken
from core.models.checkin import CheckIn, CheckInKind, CheckInState
from core.models.conversation import Conversation, SeenInbound
from core.models.defender import (
    GONE,
    ChannelAddress,
    Consent,
    Defender,
    DefenderStatus,
    TrustedContact,
)
from core.models.desk import AlertNote, DeskGroup, DeskSession, OrgKey, ReportReview, ThrottleHit
from core.models.handoff import Handoff, HandoffState
from core.models.org import ApiToken, EscalationPolicy, InviteCode, Organisation, Responder, Role
from core.models.outbox import OutboxMessage, OutboxState
from core.models.report import Evidence, Report
from core.models.webhook import Webhook

__all__ = [
    "DO_NOT_CONTACT",
    "GONE",
    "Alert",
    "AlertEvent",
    "AlertKind",
    "AlertNote",
    "AlertState",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Broadcast",
    "BroadcastRecipient",
    "CallbackToken",
    "ChannelAddress",
    "CheckIn",
    "CheckInKind",
    "CheckInState",
    "Consent",
    "Conversation",
    "Defender",
    "DefenderStatus",
    "DeskGroup",
    "DeskSession",
    "Encrypted",
    "Evidence",
    "Handoff",
    "HandoffState",
    "EscalationPolicy",
    "InviteCode",
    "OrgKey",
    "Organisation",
    "OutboxMessage",
    "OutboxState",
    "Priority",
    "QueueVersion",
    "Report",
    "ReportReview",
    "Responder",
    "Role",
    "SeenInbound",
    "ThrottleHit",
    "TrustedContact",
    "Webhook",
    "utcnow",
]
