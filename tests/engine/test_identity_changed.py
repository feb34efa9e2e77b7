"""R6: a defender's Signal safety number changed (signal-cli refuses to send: "untrusted
identities"). The desk is alerted, flagged do-not-contact, and the contacts are not told:
it may only be a new phone. Both backends."""

from __future__ import annotations

from sqlalchemy import select

from bot.signal_render import delivery_error
from core import checkins
from core.db import transaction
from core.messages import IDENTITY_CHANGED
from core.models import Alert, AlertKind
from core.sweep import Sweep
from tests.engine.conftest import T0
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import SEC, dispatcher, standin_world


def test_signal_cli_refusing_an_untrusted_identity_is_a_changed_safety_number() -> None:
    for body in (
        '{"error":"Failed to send message due to untrusted identities"}',
        '{"error":"Failed to send (some) messages:\\nUntrusted Identity for \\"+3212\\""}',
    ):
        refused = delivery_error(400, body)
        assert (str(refused), refused.permanent) == (IDENTITY_CHANGED, True)


async def test_a_changed_safety_number_alerts_the_desk_not_the_contacts(  # type: ignore[no-untyped-def]
    sessions, vault
) -> None:
    world = await standin_world(sessions, vault)
    main = StandIn("standin")
    main.fail("d-quiet-heron-41", delivery_error(400, "Untrusted Identity for +3212"))
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * SEC)
    sweep, d = Sweep(world.sessions, world.vault, owner="s"), dispatcher(world, {"standin": main})
    await sweep.run(T0)  # the reminder goes, and is refused: their key changed
    await d.drain(T0 + SEC)
    async with world.sessions() as s:
        raised = [(a.kind, a.do_not_contact) for a in (await s.execute(select(Alert))).scalars()]
    assert (AlertKind.identity_changed, True) in raised, raised
    await d.drain(T0 + 2 * SEC)
    told = main.to("r0-quiet-heron-41")
    assert any("safety number changed" in t for t in told), main.sent
    assert not any("safety number" in t for t in main.to("c0-quiet-heron-41"))
