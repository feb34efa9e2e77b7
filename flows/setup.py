"""Steps shared by onboarding and settings: time zone, trusted contacts, routine, code phrases.

    zone --> contacts --(add)--> contact_label --> contacts_more --(add)--> contact_label
                     --(later)---------------------------------(continue)--> routine
    routine --(a time)--> routine_days --> alert_phrase --> safe_phrase --> done
    routine --("8": morning or evening?)--> routine_half --> routine_days

In onboarding (``data["chain"]``) each step leads to the next; from settings, a step asked
alone ends the conversation once answered.
"""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from core import checkins, contacts
from core.defenders import save_settings
from core.messages import Choice
from core.models import CheckIn, CheckInKind, CheckInState, Consent
from core.pins import Verdict
from core.text import digits, fold, pin
from flows import country, onboarding, words
from flows.context import END, Context, Retry
from flows.when import format_clock, format_when, halves, parse_clock, parse_zone

NAME = "setup"
TTL = timedelta(days=2)
MAX_LABEL = 60
# The choices' keys, and their days before they followed the defender's country (a routine
# change asked then and confirmed with the PIN since: ``apply_routine``).
DAYS = {"every_day": "0123456", "weekdays": "01234", "weekends": "56"}


def _next(ctx: Context, ask_next: str) -> str:
    if ctx.data.get("chain"):
        return ASKS[ask_next](ctx, chain=True)
    ctx.say(ctx._("Saved."))
    return END


def ask_zone(ctx: Context, *, chain: bool = False) -> str:
    ctx.data["chain"] = chain
    ctx.ask(
        ctx._(
            "Which city are you in, or which big city is nearest? You can also send your "
            "offset from UTC, like UTC-5."
        )
    )
    return "setup:zone"


async def zone(ctx: Context) -> str:
    assert ctx.defender is not None
    found = parse_zone(ctx.need_text())
    if found is None:
        raise Retry(ctx._("I don't know that place. Try a big city nearby, or send like UTC+3."))
    ctx.defender.timezone = found
    await checkins.move_zone(ctx.session, defender=ctx.defender, now=ctx.now)
    local = format_when(ctx.now, now=ctx.now, zone_name=found, locale=ctx.locale)
    ctx.say(ctx._("Time zone set: it is {time} there now.").format(time=local))
    due = await checkins.next_due(ctx.session, defender=ctx.defender)
    if due is not None:  # a routine moves sooner, never later: say when, in the new zone
        ctx.say(
            ctx._("Your next check-in is due {when} ({relative}).").format(
                when=ctx.when(due), relative=ctx.in_(due)
            )
        )
    return _next(ctx, "contacts")


def ask_contacts(ctx: Context, *, chain: bool = False) -> str:
    ctx.data["chain"] = chain
    ctx.ask(
        ctx._(
            "Trusted contacts are people we tell when you need help. Each one gets a code from "
            "you and confirms here. Add one now?"
        ),
        (Choice("add", ctx._("Add a contact")), Choice("later", ctx._("Later"))),
    )
    return "setup:contacts"


def ask_label(ctx: Context) -> str:
    ctx.ask(ctx._("What do you call this person? Only you will see it, e.g. 'sister'."))
    return "setup:contact_label"


async def contacts_step(ctx: Context) -> str:
    said = ctx.yes_or_no()  # "Add one now?" answered yes or no
    if said or (said is None and ctx.need_choice("add", "later") == "add"):
        return ask_label(ctx)
    return _next(ctx, "routine")


async def contact_label(ctx: Context) -> str:
    assert ctx.defender is not None
    label = ctx.need_text()
    if len(label) > MAX_LABEL:
        raise Retry(ctx._("Please use a shorter name."))
    counts = await contacts.counts(ctx.session, defender_id=ctx.defender.id)
    gone = counts[Consent.revoked] + counts[Consent.removed]
    if sum(counts.values()) - gone >= contacts.MAX_CONTACTS:
        ctx.say(ctx._("You already have the most contacts we allow."))
        return _next(ctx, "routine")
    shadow = bool(ctx.data.get("shadow"))  # settings, under the duress PIN: never notified
    code = await contacts.invite(
        ctx.session, ctx.vault, defender=ctx.defender, label=label, now=ctx.now, shadow=shadow
    )
    ctx.say(
        ctx._(
            "Give this code to them in person or by phone: {code}\nThey send it to this bot "
            "from their own phone within 7 days, and confirm. They count as a contact only "
            "once they confirm."
        ).format(code=code)
        + "\n"
        + called(ctx),
        sensitive=True,
    )
    ctx.ask(
        ctx._("Add another contact?"),
        (Choice("add", ctx._("Add another")), Choice("done", ctx._("Continue"))),
    )
    return "contacts_more"


def called(ctx: Context) -> str:
    """The name our messages to the contacts give the defender (``flows.contact`` tells each
    contact it when they accept): so the defender can tell them whom an alert is about."""
    assert ctx.defender is not None
    return ctx._("In our messages to your contacts, you are called {handle}.").format(
        handle=ctx.defender.handle
    )


async def contacts_more(ctx: Context) -> str:
    said = ctx.yes_or_no()  # "Add another contact?" answered yes or no
    if said or (said is None and ctx.need_choice("add", "done") == "add"):
        return ask_label(ctx)
    return _next(ctx, "routine")


def ask_routine(ctx: Context, *, chain: bool = False) -> str:
    ctx.data["chain"] = chain
    ctx.ask(
        ctx._(
            "Would you like a regular check-in? Send a time, like 20:00. If you don't check in "
            "by then, we remind you, then tell your contacts."
        ),
        (Choice("none", ctx._("No regular check-in")),),
    )
    return "setup:routine"


async def routine(ctx: Context) -> str:
    assert ctx.defender is not None
    said_no = ctx.yes_or_no() is False  # "no", "non", "لا": the question invites it
    if said_no or ctx.choice_or_none("none"):
        if await _guarded(ctx):
            return _confirm(ctx, {"kind": "routine", "time": None, "days": None})
        await apply_routine(ctx, None, None)
        return _next(ctx, "alert_phrase")
    text = ctx.need_text()
    clock = parse_clock(text)
    if clock is None:
        raise Retry(ctx._("Please send a time like 20:00 or 8pm."))
    either = halves(text, ctx.locale)
    if either is not None:  # "8": in the morning or the evening? Asked, never guessed
        ctx.ask(
            ctx._("Which time do you mean?"),
            tuple(Choice(f"at:{t:%H:%M}", format_clock(t, ctx.locale)) for t in either),
        )
        return "routine_half"
    return ask_days(ctx, clock.strftime("%H:%M"))


async def routine_half(ctx: Context) -> str:
    """The morning's or the evening's; a time typed again is read afresh (``routine``)."""
    offered = [key for key, _label in ctx.data.get("_ask", {}).get("choices", [])]
    picked = ctx.choice_or_none(*offered)
    if picked is None:
        return await routine(ctx)
    return ask_days(ctx, picked.removeprefix("at:"))


def ask_days(ctx: Context, clock: str) -> str:
    """Every day, the working week or the weekend, as the defender's country keeps them."""
    assert ctx.defender is not None
    ctx.data["time"] = clock
    zone_name, locale = ctx.defender.timezone, ctx.defender.locale
    ctx.ask(
        ctx._("On which days?"),
        (
            Choice("every_day", ctx._("Every day")),
            Choice("weekdays", country.label(country.working(zone_name), locale)),
            Choice("weekends", country.label(country.weekend(zone_name), locale)),
        ),
    )
    return "routine_days"


def _days(ctx: Context, key: str) -> str:
    assert ctx.defender is not None
    if key == "weekdays":
        return country.working(ctx.defender.timezone)
    return country.weekend(ctx.defender.timezone) if key == "weekends" else country.EVERY_DAY


async def routine_days(ctx: Context) -> str:
    key, time = ctx.need_choice(*DAYS), str(ctx.data.pop("time"))
    days = _days(ctx, key)
    if await _guarded(ctx):
        return _confirm(ctx, {"kind": "routine", "time": time, "days": days})
    await apply_routine(ctx, time, days)
    return _next(ctx, "alert_phrase")


async def _guarded(ctx: Context) -> bool:
    """Changing or ending a regular check-in that is running can stop the next escalation
    (someone holding the unlocked phone): it takes the PIN, as "pause" does. Setting up the
    first one (onboarding) does not."""
    assert ctx.defender is not None
    if ctx.data.get("chain"):
        return False
    running = select(CheckIn.id).where(
        CheckIn.defender_id == ctx.defender.id,
        CheckIn.kind == CheckInKind.routine,
        CheckIn.state.in_(checkins.LIVE),
    )
    return (await ctx.session.execute(running.limit(1))).first() is not None


def _confirm(ctx: Context, action: dict[str, object]) -> str:
    ctx.data["action"] = action  # done by checkin:pin once the PIN is right
    ctx.ask(ctx._("Send your PIN to confirm."), sensitive=True)
    return "checkin:pin"


async def apply_routine(ctx: Context, time: str | None, days: str | None) -> None:
    """A regular check-in at ``time`` on ``days`` (weekday digits, or a ``DAYS`` key as a
    confirmation asked before the days followed the country kept it); None: no regular
    check-in."""
    assert ctx.defender is not None
    if time is None or days is None:
        await checkins.clear_routine(ctx.session, defender=ctx.defender)
        return
    clock = parse_clock(time)
    assert clock is not None
    row = await checkins.set_routine(
        ctx.session,
        defender=ctx.defender,
        local_time=clock,
        days=DAYS.get(days, days),
        now=ctx.now,
    )
    if row.state is CheckInState.paused:  # set while their check-ins are paused
        ctx.say(
            ctx._(
                "Regular check-in set. Your check-ins are paused: it starts when you resume "
                "them (send /checkin and choose Resume)."
            )
        )
        return
    due = ctx.when(row.due_at)
    ctx.say(ctx._("Regular check-in set. The next one is due {when}.").format(when=due))


def ask_alert_phrase(ctx: Context, *, chain: bool = False) -> str:
    ctx.data["chain"] = chain
    ctx.ask(
        ctx._(
            "Optional: choose a code phrase that raises an alert when you send it on its own. "
            "Pick something ordinary, like 'Is the bakery open?'. Send it now, or skip."
        ),
        (Choice("skip", ctx._("Skip")),),
        sensitive=True,
    )
    return "setup:alert_phrase"


def ask_safe_phrase(ctx: Context, *, chain: bool = False) -> str:
    ctx.data["chain"] = chain
    ctx.ask(
        ctx._(
            "Optional: a second phrase that means 'I'm safe'. We will still ask for your PIN. "
            "Send it now, or skip."
        ),
        (Choice("skip", ctx._("Skip")),),
        sensitive=True,
    )
    return "setup:safe_phrase"


# How many of a phrase's digit sequences are checked against the PIN (each an Argon2id run):
# every one of 4 to 8 digits in a row of 8.
PIN_LOOKS = 15


# Where a code phrase is being set: its digits are checked against the PINs before the
# transaction (flows.engine), as a PIN is.
PHRASE_STATES = (("setup", "alert_phrase"), ("setup", "safe_phrase"))
_RUN = re.compile(r"[0-9]{4,}")


def has_digits(text: str) -> bool:
    """Whether ``text`` has 4 digits (any script's), as a phrase holding a PIN does."""
    return sum(c.isdecimal() for c in text) >= 4


def pin_looks(text: str) -> set[str]:
    """Every sequence of 4 to 8 digits in a row in a phrase as it is compared (spaces and
    punctuation left out): those checked against the PINs, up to ``PIN_LOOKS``."""
    runs = _RUN.findall(digits(words.phrase_form(fold(text))))
    return {r[i : i + n] for r in runs for n in range(4, 9) for i in range(len(r) - n + 1)}


async def _shows_pin(ctx: Context, looks: set[str]) -> bool:
    """Whether one of ``looks`` (``pin_looks``) is one of the defender's PINs: sent in the
    open to raise an alert, the phrase would show that PIN to whoever reads the screen. Under
    the duress PIN (settings in shadow, someone else may hold the phone) only the duress PIN
    is looked for: refusing a phrase for holding the cancel PIN would tell whoever typed it
    that their guess is the real PIN. The engine checked them before the transaction
    (flows.engine): the checker answers here from its cache."""
    if ctx.pin_checker is None:
        return False
    shadow = bool(ctx.data.get("shadow"))
    for typed in sorted(looks):
        verdict = await ctx.pin_checker(typed)
        if verdict is Verdict.duress or (verdict is Verdict.ok and not shadow):
            return True
    return False


async def _save_phrase(ctx: Context, key: str, other: str) -> None:
    """Keep the phrase sent (nothing on "skip") under ``key``; it must differ from ``other``
    and not show the PIN."""
    assert ctx.defender is not None
    current = ctx.settings
    if ctx.choice_or_none("skip"):
        return
    phrase = fold(ctx.need_text())
    ctx.forget_message()
    form = words.phrase_form(phrase)  # how it is compared: "12-34" would be the PIN 1234
    looks_like_pin = form.isdigit() or pin(phrase) is not None  # "12 34" is a PIN
    short = len(form) < 2  # "a!": compared without its punctuation
    if not 2 <= len(phrase) <= 64 or short or words.reserved(phrase) or looks_like_pin:
        raise Retry(ctx._("Please choose a phrase of 2 to 64 characters that is not a command."))
    if words.same_phrase(phrase, current.get(other)):
        raise Retry(ctx._("The two phrases must be different."))
    looks = pin_looks(phrase)
    if len(looks) > PIN_LOOKS:
        raise Retry(ctx._("Please choose a phrase with fewer digits."))
    if await _shows_pin(ctx, looks):
        raise Retry(ctx._("Please choose a phrase without your PIN in it."))
    if not ctx.data.get("shadow"):  # settings under the duress PIN: the same words, no change
        save_settings(ctx.vault, ctx.defender, {**current, key: phrase})


async def alert_phrase(ctx: Context) -> str:
    await _save_phrase(ctx, "alert_phrase", "safe_phrase")
    return _next(ctx, "safe_phrase")


async def safe_phrase(ctx: Context) -> str:
    await _save_phrase(ctx, "safe_phrase", "alert_phrase")
    if ctx.data.get("chain"):
        onboarding.finish(ctx)
        return END
    ctx.say(ctx._("Saved."))
    return END


ASKS = {
    "contacts": ask_contacts,
    "routine": ask_routine,
    "alert_phrase": ask_alert_phrase,
    "safe_phrase": ask_safe_phrase,
}
STATES = {
    "zone": zone,
    "contacts": contacts_step,
    "contact_label": contact_label,
    "contacts_more": contacts_more,
    "routine": routine,
    "routine_half": routine_half,
    "routine_days": routine_days,
    "alert_phrase": alert_phrase,
    "safe_phrase": safe_phrase,
}
