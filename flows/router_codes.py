"""Codes typed in a chat, for the router (``flows.router``): an invite, a trusted contact's
or a desk link code (``CODE``), from someone the bot does not know yet (``stranger``) or not;
wrong ones are counted, and a chat that typed too many gets nowhere (``tried``, R21).
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from typing import Any, TypeVar

from core.security import CODE_ALPHABET
from core.throttle import Throttle
from flows import contact, onboarding, words
from flows.context import Context
from flows.router_states import run
from flows.store import IDLE

# An invite or contact code, also as read out in two halves: "ABCD EFGH", "abcd-efgh".
# Only a code's own characters (core.security.CODE_ALPHABET: no i, l, o, 0 or 1), so that
# "question" or "good luck" is not taken for one, nor counted as a wrong guess (CODE_TRIES).
_HALF = f"([{CODE_ALPHABET.lower()}]{{4}})"
CODE = re.compile(rf"(?:/start\s+)?{_HALF}\s*-?\s*{_HALF}")
CODE_TRIES, CODE_WINDOW_S = 10, 3600  # wrong codes a chat may type an hour
T = TypeVar("T")


async def stranger(ctx: Context, flow: str, state: str, typed: str) -> tuple[str, str]:
    """Someone the bot does not know (yet): an invite code, or a trusted contact answering."""
    code = CODE.fullmatch(typed)
    if code and (found := await tried(ctx, _redeem(ctx, code[1] + code[2]))):
        return found
    if flow != IDLE and typed not in words.CANCEL:
        return await run(ctx, flow, state)
    return await run(ctx, "contact", "welcome")


async def _redeem(ctx: Context, code: str) -> tuple[str, str] | None:
    return await onboarding.redeem(ctx, code) or await contact.redeem(ctx, code)


async def tried(ctx: Context, attempt: Coroutine[Any, Any, T]) -> T | None:
    """A code typed in a chat (an invite, a contact's or a desk link code), unless that chat
    has already typed CODE_TRIES wrong ones this hour: then every code, right or wrong, gets
    what a wrong one gets, so guessing stays hopeless (R21). A code is about 40 bits."""
    guesses = Throttle(CODE_TRIES, CODE_WINDOW_S, scope="code_guess", keyer=ctx.vault.blind_index)
    who = str(ctx.address.id)
    if await guesses.blocked_in(ctx.session, who, ctx.now):
        attempt.close()
        return None
    found = await attempt
    if not found:
        await guesses.hit_in(ctx.session, who, ctx.now)
    return found or None
