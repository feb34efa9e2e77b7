"""The audit page's entries as a responder reads them: a detail's known values in their
language (a role, a login's failure reason, an outcome, a language, the fields reviewed) and a
target by what it is (the alert, report, roll-call or defender, linked; a responder's
username; an API token's name; a webhook endpoint's host; "Invite code"; the organisation's
name). Display only: the trail itself (and /api/v1/audit) keeps the raw values,
which stay on the page beside the words; anything not known shows as it is written."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from babel import Locale
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api import labels
from api.pages import KINDS, OUTCOMES, REPORT_FIELDS
from core import handoffs
from core.i18n import gettext
from core.models import (
    Alert,
    ApiToken,
    Broadcast,
    Defender,
    DefenderStatus,
    EscalationPolicy,
    InviteCode,
    Organisation,
    Report,
    Responder,
    Webhook,
)

Say = Callable[[str], str]


@dataclass(frozen=True)
class Target:
    text: str
    href: str | None = None
    raw: str | None = None  # the id as written, when ``text`` says something else


@dataclass(frozen=True)
class Detail:
    key: str
    name: str | None  # the key's word, None for a key the labels do not know
    value: str  # the value's word, or the value as it is written
    raw: str | None = None  # the value as written, when ``value`` is a word


# Whose id an action's target is (the writers: grep ``audit.record``): the rest stay raw.
RESPONDER_TARGETS = ("responder.", "roster.", "auth.login", "auth.password_change")
NAMED_TARGETS = ("token.", "webhook.", "org.")  # ``Known.named``
REPORT_TARGETS = ("report.view_sealed", "report.view_evidence", "report.review")


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


@dataclass
class Known:
    """The organisation's own things an entry may name, by id (another organisation's ids
    are never looked up: every query is scoped to ``org_id``)."""

    responders: dict[uuid.UUID, str]
    alerts: dict[uuid.UUID, tuple[str, str]]  # kind, defender's handle
    reports: dict[uuid.UUID, str]  # receipt code
    defenders: dict[uuid.UUID, str]  # handle
    gone: set[uuid.UUID]  # defenders whose data was deleted: no page to link to
    rollcalls: set[uuid.UUID]
    policies: dict[uuid.UUID, str]
    # API tokens by name, webhook endpoints by host, the organisation by name: (text, link).
    named: dict[uuid.UUID, tuple[str, str | None]] = field(default_factory=dict)
    invites: set[uuid.UUID] = field(default_factory=set)
    # Hand-offs this organisation made or received: the defender's handle and the other desk.
    handoffs: dict[uuid.UUID, str] = field(default_factory=dict)


async def known(
    session: AsyncSession,
    org_id: uuid.UUID,
    entries: Iterable[Any],
    responders: dict[uuid.UUID, str],
) -> Known:
    ids = {i for e in entries if (i := _uuid(e.target)) is not None}
    ids |= {
        i
        for e in entries
        for key in ("policy", "to")
        if (i := _uuid((e.detail or {}).get(key))) is not None
    }
    found = Known(responders, {}, {}, {}, set(), set(), {})
    if not ids:
        return found
    stmt = (
        select(Alert.id, Alert.kind, Defender.handle)
        .join(Defender, Defender.id == Alert.defender_id)
        .where(Alert.id.in_(ids), Alert.org_id == org_id)
    )
    found.alerts = {i: (kind.value, handle) for i, kind, handle in await session.execute(stmt)}
    stmt2 = select(Report.id, Report.receipt_code).where(
        Report.id.in_(ids), Report.org_id == org_id
    )
    found.reports = {row[0]: row[1] for row in await session.execute(stmt2)}
    stmt3 = select(Defender.id, Defender.handle, Defender.status).where(
        Defender.id.in_(ids), Defender.org_id == org_id
    )
    for i, handle, status in await session.execute(stmt3):
        found.defenders[i] = handle
        if status is DefenderStatus.deleted:
            found.gone.add(i)
    stmt4 = select(Broadcast.id).where(
        Broadcast.id.in_(ids), Broadcast.org_id == org_id, Broadcast.closes_at.is_not(None)
    )
    found.rollcalls = set((await session.execute(stmt4)).scalars())
    stmt5 = select(EscalationPolicy.id, EscalationPolicy.name).where(
        EscalationPolicy.id.in_(ids), EscalationPolicy.org_id == org_id
    )
    found.policies = {row[0]: row[1] for row in await session.execute(stmt5)}
    await _names(session, org_id, ids, found)
    return found


async def _names(
    session: AsyncSession, org_id: uuid.UUID, ids: set[uuid.UUID], found: Known
) -> None:
    tokens = select(ApiToken.id, ApiToken.name).where(
        ApiToken.id.in_(ids), ApiToken.org_id == org_id
    )
    found.named.update({i: (name, None) for i, name in await session.execute(tokens)})
    hooks = select(Webhook.id, Webhook.url).where(Webhook.id.in_(ids), Webhook.org_id == org_id)
    # The host alone: a URL's path or query may carry the receiver's own secret.
    found.named.update(
        {i: (urlsplit(url).hostname or "", "/webhooks") for i, url in await session.execute(hooks)}
    )
    if org_id in ids:
        name = await session.scalar(select(Organisation.name).where(Organisation.id == org_id))
        found.named[org_id] = (name or "", None)
    invites = select(InviteCode.id).where(InviteCode.id.in_(ids), InviteCode.org_id == org_id)
    found.invites = set((await session.execute(invites)).scalars())
    for h in await handoffs.of(session, org_id, ids):
        other = h.to_desk if h.handoff.from_org_id == org_id else h.from_desk
        found.handoffs[h.handoff.id] = f"{h.handle} · {other}"


async def staff(session: AsyncSession, org_id: uuid.UUID) -> dict[uuid.UUID, str]:
    stmt = select(Responder.id, Responder.username).where(Responder.org_id == org_id)
    return {row[0]: row[1] for row in await session.execute(stmt)}


def target(action: str, raw: str | None, k: Known, say: Say) -> Target | None:
    if not raw:
        return None
    ident = _uuid(raw)
    if ident is None:
        return Target(raw)
    if action.startswith("alert.") and ident in k.alerts:
        kind, handle = k.alerts[ident]
        word = say(KINDS[kind]) if kind in KINDS else kind
        return Target(f"{word} · {handle}", f"/alerts/{ident}", raw)
    if action in REPORT_TARGETS and ident in k.reports:
        return Target(k.reports[ident], f"/reports/{ident}", raw)
    if action.startswith("rollcall.") and ident in k.rollcalls:
        return Target(say(labels.ROLLCALL), f"/rollcalls/{ident}", raw)
    if action.startswith("defender.") and ident in k.defenders:
        page = None if ident in k.gone else f"/defenders/{ident}"
        return Target(k.defenders[ident], page, raw)
    if action.startswith(RESPONDER_TARGETS) and ident in k.responders:
        return Target(k.responders[ident], None, raw)
    if action.startswith("policy.") and ident in k.policies:
        return Target(k.policies[ident], None, raw)
    if action.startswith(NAMED_TARGETS) and ident in k.named:
        text, href = k.named[ident]
        return Target(text, href, raw)
    if action.startswith("handoff.") and ident in k.handoffs:
        return Target(k.handoffs[ident], "/handoffs", raw)
    if action.startswith("invite.") and ident in k.invites:
        return Target(say(labels.INVITE), None, raw)
    return Target(raw)


def _words(action: str, key: str) -> Mapping[str, str] | None:
    """The words for the values of ``key`` in ``action``'s entries (to translate), if any."""
    if (action == "responder.role" and key in ("from", "to")) or key == "role":
        return labels.ROLES
    if action == "responder.active" and key in ("from", "to"):
        return labels.ACTIVE
    if key == "reason":
        return labels.REASONS
    if key == "outcome":
        return OUTCOMES
    if key == "fields":
        return {**REPORT_FIELDS, "verification": labels.VERIFICATION_FIELD}
    return None


def _named(action: str, key: str, value: Any, locale: str, k: Known, say: Say) -> str | None:
    """A value that is a name as it is (a username, a policy's, a language's, a channel)."""
    if action == "alert.assign" and key == "to":
        if value is None:
            return say(labels.NOBODY)
        return k.responders.get(_uuid(value) or uuid.UUID(int=0))
    if key == "policy" and value is not None:
        return k.policies.get(_uuid(value) or uuid.UUID(int=0))
    if key == "language" and isinstance(value, str):
        name = Locale.parse(locale).languages.get(value)
        return None if name is None else str(name)
    if key == "channel" and isinstance(value, str):
        return labels.CHANNELS.get(value)
    return None


def _raw(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def details(action: str, detail: Mapping[str, Any], locale: str, k: Known) -> list[Detail]:
    say = gettext(locale)
    shown = []
    for key, value in sorted((detail or {}).items()):
        word = labels.DETAILS.get(f"{action}:{key}") or labels.DETAILS.get(key)
        name = say(word) if word else None
        raw = _raw(value)
        named = _named(action, key, value, locale, k, say)
        if named is not None:
            shown.append(Detail(key, name, named, raw))
            continue
        words = _words(action, key)
        values = value if isinstance(value, list | tuple) else [value]
        if words and values and all(isinstance(v, str) and v in words for v in values):
            shown.append(Detail(key, name, ", ".join(say(words[v]) for v in values), raw))
        else:
            shown.append(Detail(key, name, raw))
    return shown


def rows(
    entries: Iterable[Any], k: Known, locale: str, who: Callable[[str | None], str]
) -> list[tuple[Any, str, Target | None, list[Detail]]]:
    say = gettext(locale)
    shown = []
    for e in entries:
        found = target(e.action, e.target, k, say)
        shown.append((e, who(e.actor), found, details(e.action, e.detail, locale, k)))
    return shown
