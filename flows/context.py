"""What a state function sees: the event, the defender, the conversation data, and a way to
answer. The transport stays hidden (the zulip_bots ``bot_handler`` idea).

A state function reads its input through ``need_text``, ``need_choice``, ``need_pin``…; when
the input does not fit (a photo where text is expected, bidi overrides, 5,000 characters, an
unknown option) those raise ``Retry`` and the engine re-sends the current question with a
translated explanation, keeping the state and the data as they were.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core import alerts, i18n, pins
from core.crypto import Vault
from core.defenders import settings
from core.messages import Choice, Inbound, Outbound
from core.models import AlertKind, ChannelAddress, Defender, Priority
from core.pins import Verdict
from core.text import BadText, clean, fold, pin
from flows import when, words

END = ""  # a state function returning END closes the conversation


class Retry(Exception):
    """Bad input: say ``message``, ask the current question again, keep the state."""

    def __init__(self, message: str) -> None:
        super().__init__("retry")
        self.message = message


@dataclass
class Context:
    session: AsyncSession
    vault: Vault
    now: datetime
    inbound: Inbound
    address: ChannelAddress
    defender: Defender | None
    data: dict[str, Any]
    pin_checker: Callable[[str], Awaitable[Verdict]] | None = None  # set by the engine
    since: datetime | None = None  # when the conversation last moved (None: never stored)
    replies: list[Outbound] = field(default_factory=list)
    delete_ids: list[str] = field(default_factory=list)
    priority: Priority = Priority.P1
    asked: bool = False  # a question was asked during this event
    forgotten: bool = False  # the conversation row was deleted with the defender's data

    # --- language and time ------------------------------------------------------------

    @property
    def locale(self) -> str:
        if self.defender is not None:
            return self.defender.locale
        return i18n.negotiate([self.inbound.language])

    def _(self, message: str) -> str:
        return i18n.gettext(self.locale)(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return i18n.ngettext(self.locale)(singular, plural, n)

    @property
    def zone(self) -> str:
        return self.defender.timezone if self.defender is not None else "UTC"

    def when(self, moment: datetime) -> str:
        return when.format_when(moment, now=self.now, zone_name=self.zone, locale=self.locale)

    def in_(self, moment: datetime) -> str:
        return when.format_in(moment, now=self.now, locale=self.locale)

    # --- answering --------------------------------------------------------------------

    @property
    def discreet(self) -> bool:
        return self.defender is not None and self.defender.discreet

    def say(self, text: str, *, sensitive: bool = False) -> None:
        self.replies.append(Outbound(text=text, sensitive=sensitive or self.discreet))

    def ask(
        self,
        text: str,
        choices: tuple[Choice, ...] = (),
        *,
        sensitive: bool = False,
        location: bool = False,
    ) -> None:
        """Say ``text`` and remember it as the question to repeat after bad input."""
        self.asked = True
        self.data["_ask"] = {
            "text": text,
            "choices": [[c.key, c.label] for c in choices],
            "sensitive": sensitive,
            "location": location,
        }
        self.replies.append(
            Outbound(
                text=text,
                choices=choices,
                sensitive=sensitive or self.discreet,
                request_location=location and not self.discreet,
            )
        )

    def ask_again(self) -> None:
        asked = self.data.get("_ask")
        if asked:
            choices = tuple(Choice(k, label) for k, label in asked["choices"])
            self.ask(
                asked["text"], choices, sensitive=asked["sensitive"], location=asked["location"]
            )

    def forget_message(self) -> None:
        """Ask channels that can to delete the message just received (a PIN, a report)."""
        message_id = self.inbound.chat_message_id
        if message_id and message_id not in self.delete_ids:
            self.delete_ids.append(message_id)

    # --- reading the input ------------------------------------------------------------

    def need_text(self) -> str:
        # A location read from the text (Signal: "52.52, 13.40") does not make it less text.
        if self.inbound.text is None or self.inbound.attachments:
            raise Retry(self._("Please answer with a text message."))
        try:
            return clean(self.inbound.text)
        except BadText as bad:
            raise Retry(bad_text_message(self, bad.reason)) from None

    def need_choice(self, *keys: str) -> str:
        if self.inbound.choice in keys:
            return self.inbound.choice
        if self.inbound.text is not None and not self.inbound.attachments:
            wanted = words.label(self.inbound.text)
            asked = [(k, label) for k, label in self.data.get("_ask", {}).get("choices", [])]
            if wanted.isdigit() and len(wanted) <= 2 and 1 <= int(wanted) <= len(asked):
                wanted = fold(asked[int(wanted) - 1][0])  # Signal and the console number them
            labels = dict(asked)
            for key in keys:
                if wanted in (fold(key), words.label(labels.get(key, "\0"))):
                    return key
        raise Retry(self._("Please pick one of the options."))

    def yes_or_no(self) -> bool | None:
        """A bare yes or no typed in any of our languages ("sí", "non", "لا"); None for
        anything else (a button, other words)."""
        if self.inbound.choice or self.inbound.text is None:
            return None
        typed = fold(self.inbound.text)
        return True if typed in words.YES else False if typed in words.NO else None

    def choice_or_none(self, *keys: str) -> str | None:
        try:
            return self.need_choice(*keys)
        except Retry:
            return None

    def need_pin(self) -> str:
        """A 4-8 digit PIN in any script; the message is deleted where the channel can."""
        typed = pin(self.inbound.text or "")
        if typed is None or self.inbound.attachments:
            raise Retry(self._("A PIN has 4 to 8 digits. Please send it again."))
        self.forget_message()
        return typed

    async def check_pin(self) -> Verdict:
        """The counted verdict on the PIN just sent (see ``core.pins``)."""
        typed = self.need_pin()
        assert self.defender is not None and self.pin_checker is not None
        return pins.count(self.defender, await self.pin_checker(typed), self.now)

    async def is_a_pin(self, text: str | None = None) -> bool:
        """The message is one of the defender's PINs alone, the cancel or the duress one (not
        counted as a wrong PIN when it is neither: a number is no guess). Only a message
        shaped like a PIN is checked, and the engine checked it before the transaction
        (``pin_checker`` has its verdict): Argon2id runs on no other text. ``text``: what a
        state function read from the message instead (a number's digits, "1,234" read as
        1234), checked only when shaped like a PIN (then in the transaction, whatever it is)."""
        typed = pin((self.inbound.text or "") if text is None else text)
        if typed is None or self.pin_checker is None:
            return False
        return await self.pin_checker(typed) is not Verdict.wrong

    async def confirm_pin(self) -> Verdict:
        """ok or duress, the duress PIN also raising the silent alert; a wrong PIN asks again.
        After either PIN the caller must answer byte for byte the same."""
        verdict = await self.check_pin()
        if verdict is Verdict.wrong:
            raise Retry(self._("That PIN is not right. Please try again."))
        if verdict is Verdict.duress:
            assert self.defender is not None
            await alerts.raise_alert(
                self.session,
                self.vault,
                defender=self.defender,
                kind=AlertKind.duress,
                now=self.now,
            )
        return verdict

    @property
    def settings(self) -> dict[str, Any]:
        return {} if self.defender is None else settings(self.vault, self.defender)


def bad_text_message(ctx: Context, reason: str) -> str:
    if reason == "too_long":
        return ctx._("That message is too long. Please keep it under 4,000 characters.")
    if reason == "empty":
        return ctx._("That message was empty. Please try again.")
    return ctx._(
        "That message contains invisible control characters. Please type it again plainly."
    )
