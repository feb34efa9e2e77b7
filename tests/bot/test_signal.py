"""bot/signal.py with the real signalbot 2 against the signal-cli-rest-api stand-in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import signalbot._pipeline as pipeline
from aiohttp import WSCloseCode

from bot.signal import Signal
from bot.signal_logs import ClassOnly
from bot.signal_render import delivery_error, parse_location, render
from core.messages import Address, Attachment, Choice, DeliveryError, Inbound, Outbound
from tests.standins.signal_cli import SignalStandIn

ALICE = "0b1e9a63-3c57-4d3c-9d25-6f1f1d3c0a11"
BOB = "5c7d2e41-8f0a-4b6e-a1d3-2e9f7c4b8a22"


async def wait_for(condition: Callable[[], object], seconds: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
async def service() -> AsyncIterator[SignalStandIn]:
    stand_in = SignalStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
def inbox() -> list[Inbound]:
    return []


@pytest.fixture
def defenders() -> set[str]:
    """The addresses the adapter's lookup says are defenders' (whose files are read)."""
    return {ALICE}


@pytest.fixture
async def signal(
    service: SignalStandIn, inbox: list[Inbound], defenders: set[str]
) -> AsyncIterator[Signal]:
    async def known(source: str) -> bool:
        return source in defenders

    channel = Signal(service=service.service, number=service.number, known=known)

    async def receive(inbound: Inbound) -> None:
        await asyncio.sleep(0.01 if inbound.text == "first" else 0)  # a slow first message
        inbox.append(inbound)

    task = asyncio.create_task(channel.run(receive))
    await asyncio.wait_for(channel.ready.wait(), 15)
    await asyncio.wait_for(service.connected.wait(), 15)
    yield channel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await channel.close()


async def test_it_turns_envelopes_into_inbound_events(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    frame = await service.send_text(ALICE, "first")
    await service.send_text(ALICE, "second")
    await service.send_group_text(ALICE, "in a group")
    await service.push(
        service.envelope(ALICE, {"message": "from my laptop"}, source_number=service.number)
    )
    await service.send_attachment(ALICE, b"%PDF-1.7 report", "application/pdf", text="doc")
    await service.send_text(ALICE, "I am at https://maps.example/@52.5200,13.4050,15z")
    await wait_for(lambda: len(inbox) == 4)
    assert [i.text for i in inbox][:2] == ["first", "second"]  # in order, despite the delay
    first = inbox[0]
    stamp = frame["envelope"]["dataMessage"]["timestamp"]
    assert (first.channel, first.address, first.message_id) == (
        "signal",
        ALICE,
        f"{ALICE}:{stamp}",
    )
    assert inbox[2].attachments[0].data == b"%PDF-1.7 report"
    location = inbox[3].location
    assert location is not None and (location.latitude, location.longitude) == (52.52, 13.405)


async def test_a_message_that_says_nothing_is_not_answered(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """The phone sends data messages nobody typed: the chat's disappearing timer changed on
    it, its profile key after a message request was accepted, a reset session. They reach
    no flow (which would answer "Sorry, I didn't understand that" and the menu, or ask again
    for a PIN); the timer still counts."""
    timer = {"isExpirationUpdate": True, "expiresInSeconds": 0}
    await service.push(service.envelope(ALICE, timer))
    await service.push(service.envelope(ALICE, {"isProfileKeyUpdate": True}))
    await service.push(service.envelope(ALICE, {"isEndSession": True}))
    await service.send_text(ALICE, "marker", expiresInSeconds=3600)
    await wait_for(lambda: inbox)
    await asyncio.sleep(0.2)
    assert [i.text for i in inbox] == ["marker"]
    await service.push(service.envelope(ALICE, timer))  # switched off on the phone
    await asyncio.sleep(0.2)
    await signal.send(Address("signal", ALICE), Outbound("noted"))
    assert service.timers[ALICE] == 86400 and len(inbox) == 1


async def test_it_sends_numbered_choices_with_disappearing_messages(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    await service.send_text(ALICE, "hello")  # a newcomer's chat has no timer yet
    await wait_for(lambda: inbox)
    to = Address("signal", ALICE)
    question = Outbound("Can you talk?", choices=(Choice("yes", "Yes"), Choice("no", "No")))
    delivered = await signal.send(to, question)
    await signal.send(to, Outbound("ok", attachments=(Attachment("a.txt", "text/plain", b"x"),)))
    assert service.sent[0] == {
        "number": service.number,
        "recipients": [ALICE],
        "message": "Can you talk?\n1. Yes\n2. No",
    }
    assert service.sent[1]["base64_attachments"][0].endswith("base64,eA==")
    assert timers(service) == [{"recipient": ALICE, "expiration_in_seconds": 86400}]  # once
    assert delivered.message_id is not None
    await signal.send(to, Outbound("", delete_message_ids=(delivered.message_id,)))
    deletes = [b for v, p, b in service.requests if p.startswith("/v1/remote-delete/")]
    assert deletes == [{"recipient": ALICE, "timestamp": int(delivered.message_id)}]
    assert len(service.sent) == 2


def timers(service: SignalStandIn) -> list[object]:
    return [b for v, p, b in service.requests if p.startswith("/v1/contacts/")]


async def test_it_applies_the_defenders_timer_and_keeps_it_across_restarts(
    service: SignalStandIn, signal: Signal
) -> None:
    to = Address("signal", ALICE)
    delivered = await signal.send(to, Outbound("", expiry_s=3600))  # an instruction only
    assert delivered.message_id is None and service.sent == []
    assert timers(service) == [{"recipient": ALICE, "expiration_in_seconds": 3600}]
    # a new process
    restarted = Signal(service=service.service, number=service.number, known=signal.known)
    heard: list[Inbound] = []

    async def receive(inbound: Inbound) -> None:
        heard.append(inbound)

    task = asyncio.create_task(restarted.run(receive))
    await asyncio.wait_for(restarted.ready.wait(), 15)
    await wait_for(lambda: len(service.sockets) == 2)
    try:
        frame = await service.send_text(ALICE, "hello")  # the phone adopted the timer
        assert frame["envelope"]["dataMessage"]["expiresInSeconds"] == 3600
        await wait_for(lambda: heard)
        await restarted.send(to, Outbound("hi"))
        assert len(timers(service)) == 1  # the choice stands: no default over it
        # Switched off on the phone: the next message of ours puts the default back first.
        await service.send_text(ALICE, "timer off", expiresInSeconds=0)
        await wait_for(lambda: len(heard) == 2)
        await restarted.send(to, Outbound("noted"))
        assert timers(service)[-1] == {"recipient": ALICE, "expiration_in_seconds": 86400}
        assert [m["message"] for m in service.sent] == ["hi", "noted"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await restarted.close()


async def test_a_failing_default_timer_never_holds_a_message_back(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    to = Address("signal", ALICE)
    await service.send_text(ALICE, "/panic")
    await wait_for(lambda: inbox)
    service.fail_next(f"/v1/contacts/{service.number}", 500, "signal-cli daemon unavailable")
    await signal.send(to, Outbound("Alert raised."))
    assert [m["message"] for m in service.sent] == ["Alert raised."]
    await signal.send(to, Outbound("Stay safe."))  # tried again before the next message
    assert timers(service)[-1] == {"recipient": ALICE, "expiration_in_seconds": 86400}
    service.fail_next(f"/v1/contacts/{service.number}", 500, "signal-cli daemon unavailable")
    with pytest.raises(DeliveryError):  # the defender's own choice is retried by the outbox
        await signal.send(to, Outbound("", expiry_s=604800))


async def test_it_classifies_send_failures(service: SignalStandIn, signal: Signal) -> None:
    to = Address("signal", ALICE)
    await signal.send(to, Outbound("warm up"))
    cases = [
        (400, f'Failed to send message: Unregistered user "{ALICE}"', True, "unregistered"),
        (400, "Failed to send message: [429] Rate limit exceeded", False, "rate limited"),
        (500, "signal-cli daemon unavailable", False, "signal-cli 500"),
    ]
    for status, error, permanent, reason in cases:
        service.fail_next("/v2/send", status, error)
        with pytest.raises(DeliveryError) as failure:
            await signal.send(to, Outbound("hi"))
        assert (failure.value.permanent, str(failure.value)) == (permanent, reason)
        assert ALICE not in str(failure.value)


async def test_a_passing_rate_limit_is_waited_out_not_given_up(
    service: SignalStandIn, signal: Signal
) -> None:
    """Signal's rate limit passes: the send is retried after a long wait (core.delivery honours
    retry_after, and falls back first if the wait is beyond the message's patience); it is no
    permanent failure, which would block the address and drop the message (a panic notice to
    a contact with no other address would never be retried)."""
    to = Address("signal", ALICE)
    service.rate_limit_next(recipient=ALICE)
    with pytest.raises(DeliveryError) as failure:
        await signal.send(to, Outbound("Alert: Ana pressed panic."))
    assert not failure.value.permanent and str(failure.value) == "rate limited"
    assert failure.value.retry_after is not None and failure.value.retry_after >= 300
    assert ALICE not in str(failure.value) and service.sent == []
    await signal.send(to, Outbound("Alert: Ana pressed panic."))  # once the limit has passed
    assert service.messages_to(ALICE) == ["Alert: Ana pressed panic."]


def test_only_a_verdict_on_the_recipient_is_permanent() -> None:
    """signal-cli-rest-api answers every error that is no rate limit with a 400, signal-cli's
    network failures too: only an unregistered recipient or a changed key is for good."""
    for body in [
        '{"error": "Failed to send message"}',
        '{"error": "Failed to send message (IOException)"}',
        '{"error": "Failed to send message: java.net.SocketTimeoutException: timeout"}',
        '{"error": "Couldn\'t process request - signal-cli daemon not reachable"}',
        "",
    ]:
        blip = delivery_error(400, body)
        assert not blip.permanent and blip.retry_after is None, body
    for body, reason in [
        ('{"error": "Failed to send message: Unregistered user \\"x\\""}', "unregistered"),
        ('{"error": "User x is not registered."}', "unregistered"),
        ('{"error": "Untrusted Identity for \\"x\\""}', "identity changed"),
    ]:
        refused = delivery_error(400, body)
        assert refused.permanent and str(refused) == reason, body


async def test_a_network_failure_is_retried_not_given_up(
    service: SignalStandIn, signal: Signal
) -> None:
    """signal-cli could not reach Signal for her: a 400, but the message is retried (a
    permanent failure would drop it and block her address), for the timer too."""
    to = Address("signal", ALICE)
    service.fail_next("/v2/send", 400, "Failed to send message (IOException)", recipient=ALICE)
    with pytest.raises(DeliveryError) as failure:
        await signal.send(to, Outbound("Alert raised."))
    assert not failure.value.permanent and ALICE not in str(failure.value)
    service.fail_next(f"/v1/contacts/{service.number}", 400, "Failed to send message")
    with pytest.raises(DeliveryError) as failure:
        await signal.send(to, Outbound("", expiry_s=3600))
    assert not failure.value.permanent
    await signal.send(to, Outbound("", expiry_s=3600))
    await signal.send(to, Outbound("Alert raised."))  # the outbox's retry goes through
    assert service.messages_to(ALICE) == ["Alert raised."] and service.timers[ALICE] == 3600


@pytest.mark.parametrize("code", [WSCloseCode.INTERNAL_ERROR, WSCloseCode.OK])
async def test_it_listens_again_within_seconds_after_the_socket_closes(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound], code: int
) -> None:
    """signal-cli-rest-api drops what arrives while no websocket is open (json-rpc mode): the
    socket is opened again within about a second, every time (signalbot alone waits 1, 2,
    4, 8 s… and never after a clean close), and meanwhile the channel says it is down."""
    loop = asyncio.get_running_loop()
    assert signal.inbound_down_s() == 0.0
    for n in range(5):
        await service.close_sockets(code)  # a clean close stops signalbot for good by itself
        await wait_for(lambda: not signal.ready.is_set(), 5)
        await service.send_text(ALICE, "while away")  # lost: the risk that is left
        assert signal.inbound_down_s() > 0
        closed = loop.time()
        await asyncio.wait_for(service.connected.wait(), 10)
        await asyncio.wait_for(signal.ready.wait(), 10)
        assert loop.time() - closed < 3, f"reconnect {n} took {loop.time() - closed:.1f} s"
        assert signal.inbound_down_s() == 0.0
    await service.send_text(ALICE, "back")
    await wait_for(lambda: inbox, 20)
    assert [i.text for i in inbox] == ["back"] and len(service.dropped) == 5


async def test_a_failing_receiver_is_restarted_at_once(
    service: SignalStandIn, signal: Signal, inbox: list[Inbound]
) -> None:
    """signalbot's producer fails (here: its group list cannot be fetched for a group's
    message): signalbot would retry it after 1, 2, 4 s… with nobody listening meanwhile; a
    new bot listens again within about a second, every time."""
    loop = asyncio.get_running_loop()
    for n in range(4):
        service.fail_next(f"/v1/groups/{service.number}", 500, "signal-cli daemon unavailable")
        failed = loop.time()
        await service.send_group_text(ALICE, "in an unknown group")
        await wait_for(lambda: not service._failures[f"/v1/groups/{service.number}"], 5)
        await asyncio.sleep(0.2)  # the producer has failed by now
        await asyncio.wait_for(service.connected.wait(), 10)
        await asyncio.wait_for(signal.ready.wait(), 10)
        assert loop.time() - failed < 3, f"restart {n} took {loop.time() - failed:.1f} s"
    await service.send_text(ALICE, "back")
    await wait_for(lambda: inbox, 10)
    assert [i.text for i in inbox] == ["back"]


def test_it_reads_locations_and_renders_options() -> None:
    assert parse_location("-33.45, -70.66") is not None
    assert parse_location("geo:52.52,13.405") is not None
    assert parse_location("https://maps.google.com/maps?q=52.52%2C13.405") is not None
    assert parse_location("I am at https://maps.example/@52.5200,13.4050,15z now") is not None
    # Ordinary text with two decimals is not a place (a report's text would be refused).
    assert parse_location("call me at 12.30, 14.00") is None
    assert parse_location("between 10.30, 11.45 they searched the office") is None
    assert parse_location("95.1,200.5") is None and parse_location("ok") is None
    assert render(Outbound("Pick", choices=(Choice("a", "Alpha"),))) == "Pick\n1. Alpha"


def test_the_timer_instruction_survives_the_outbox() -> None:
    for expiry in (0, 3600, None):
        again = Outbound.from_json(Outbound("", expiry_s=expiry).to_json())
        assert again.expiry_s == expiry
    assert "expiry_s" not in Outbound("hi").to_json()  # old rows and other channels unchanged


def test_only_a_real_rate_limit_waits_long() -> None:
    """A 429 inside a timestamp of a 5xx's body is a 5xx: retried soon. A rate limit, however
    signal-cli words it, is retried after a long wait; neither is given up on."""
    hiccup = delivery_error(500, '{"error": "timeout at 1735429000"}')
    assert not hiccup.permanent and hiccup.retry_after is None
    for status, body in [
        (400, '{"error": "Failed: [429] Rate limit exceeded"}'),
        (500, "status 429"),
        (400, '{"error": "CAPTCHA proof required for sending to \\"x\\""}'),
        (429, '{"error": "Failed to send message due to rate limiting."}'),
    ]:
        limited = delivery_error(status, body)
        assert not limited.permanent and str(limited) == "rate limited"
        assert limited.retry_after is not None and limited.retry_after >= 300


async def test_messages_being_handled_survive_a_restart_of_the_receiver(
    service: SignalStandIn,
) -> None:
    """signal-cli has let go of a message once it is on the websocket: a restart of the
    receiver (here: a stranger's group message while the group list cannot be fetched) must
    not cancel a defender's alert still being handled (the database slow, or down and
    retried), nor the message queued behind it."""
    handled: list[str] = []
    slow = asyncio.Event()

    async def known(source: str) -> bool:
        return True

    async def receive(inbound: Inbound) -> None:
        if inbound.text == "SOS":
            slow.set()
            await asyncio.sleep(1.5)
        handled.append(inbound.text or "")

    channel = Signal(service=service.service, number=service.number, known=known)
    task = asyncio.create_task(channel.run(receive))
    try:
        await asyncio.wait_for(channel.ready.wait(), 15)
        await service.send_text(ALICE, "SOS")
        await service.send_text(ALICE, "they took my phone's charger")
        await asyncio.wait_for(slow.wait(), 10)
        service.fail_next(f"/v1/groups/{service.number}", 500, "signal-cli daemon unavailable")
        await service.send_group_text(BOB, "in an unknown group")
        await wait_for(lambda: not service._failures[f"/v1/groups/{service.number}"], 5)
        await asyncio.sleep(0.2)  # the receiver is being restarted by now
        await asyncio.wait_for(channel.ready.wait(), 10)
        await wait_for(lambda: len(handled) == 2, 10)
        assert handled == ["SOS", "they took my phone's charger"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await channel.close()


async def test_signalbot_failures_are_logged_by_class_only(
    service: SignalStandIn,
    inbox: list[Inbound],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """signalbot printed the traceback of each failure of its startup or its receiver to
    stderr, past every log filter: the failed URL in it carries the bot's own number. A
    failure is logged, by class, and nothing of the number, a sender or a text shows. Its
    list of groups failing to come, at startup or for a group it does not know, stops
    nothing: the message is read all the same."""
    groups = f"/v1/groups/{service.number}"
    real = pipeline.parse

    async def known(source: str) -> bool:
        return True

    async def receive(inbound: Inbound) -> None:
        inbox.append(inbound)

    async def fails_once(signal: object, raw: str) -> object:
        pipeline.parse = real
        raise RuntimeError(f"cannot read {raw}")  # the frame: sender and text

    channel = Signal(service=service.service, number=service.number, known=known)
    service.fail_next("/v1/about", 500, f"no account {service.number}")  # startup fails
    service.fail_next(groups, 500, f"no groups for {service.number}")  # then only this
    caplog.set_level(logging.WARNING)
    task = asyncio.create_task(channel.run(receive))
    try:
        await asyncio.wait_for(channel.ready.wait(), 15)
        await asyncio.wait_for(service.connected.wait(), 15)
        socket = service.sockets[-1]
        service.fail_next(groups, 500, f"no groups for {service.number}")
        await service.send_group_text(ALICE, "ACK k7m2qx")  # from a group it does not know
        await wait_for(lambda: inbox, 10)  # read, the bot never deaf
        assert inbox[0].text == "ACK k7m2qx" and service.sockets[-1] is socket
        monkeypatch.setattr(pipeline, "parse", fails_once)
        await service.send_text(ALICE, "Calle 7 now")
        await wait_for(lambda: len(inbox) == 2, 10)  # read from the frame
        await wait_for(lambda: service.sockets and service.sockets[-1] is not socket, 10)
        await asyncio.wait_for(channel.ready.wait(), 10)
        await service.send_text(ALICE, "after")
        await wait_for(lambda: len(inbox) == 3, 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await channel.close()
    out, err = capfd.readouterr()
    lines = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    for secret in (service.number, service.number[1:], ALICE, "Calle"):
        assert secret not in out + err + lines
    failures = [getattr(r, "error", None) for r in caplog.records]
    assert failures.count("GetGroupsError") == 2  # at startup, and for the unknown group
    assert "RuntimeError" in failures  # the receiver's
    assert len(failures) >= 4  # and the startup's, whatever signalbot raises for a 500


def test_signalbots_logger_keeps_a_failure_to_its_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler's failure, as signalbot logs it (``logger.exception``): no traceback, whose
    text may quote a number or a frame; its class stays. Its INFO lines (raw frames) never."""
    logger = logging.getLogger("signalbot.test")
    logger.addFilter(ClassOnly())
    try:
        with caplog.at_level(logging.INFO, logger="signalbot.test"):
            logger.info("[Raw Message] %s", '{"message": "SOS 4411"}')
            try:
                raise ValueError("cannot resolve recipient +4915112345678")
            except ValueError:
                logger.exception("[%s]", "_Receiver")
    finally:
        logger.filters.clear()
    (record,) = caplog.records
    shown = logging.Formatter().format(record)
    assert "4915112345678" not in shown and "4411" not in shown
    assert getattr(record, "error", None) == "ValueError"
