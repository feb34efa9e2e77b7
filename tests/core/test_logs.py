from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest
from PIL import Image

from core import media
from core.logs import LIFECYCLE, QUIET, RedactingFilter, configure, redact


def test_it_redacts_tokens_numbers_and_newlines() -> None:
    line = redact(
        "GET https://api.telegram.org/bot123456:AAH-x_yz/getMe for +49 151 1234 5678\nINFO ok"
    )
    assert "123456:AAH" not in line and "5678" not in line
    assert "\n" not in line
    assert redact("listening on 127.0.0.1:8000") == "listening on 127.0.0.1:8000"
    assert "<number>" in redact("chat -1001234567890")


@pytest.mark.parametrize(
    ("line", "hidden"),
    [
        ("call 0171 234 5678", "234 5678"),
        ("call 555-123-4567", "123-4567"),
        ("call (555) 123-4567", "123-4567"),
        ("from 3f2a9c1e-8b7d-4e2a-9c1e-8b7d4e2a9c1e", "3f2a9c1e"),  # a Signal user id
    ],
)
def test_it_redacts_numbers_written_in_groups_and_signal_ids(line: str, hidden: str) -> None:
    assert hidden not in redact(line)


def test_it_keeps_what_is_no_one_s_number() -> None:
    for line in ("step 2 of 3", "at 2026-12-05 19:53:01", "HTTP 502 from 10.0.0.1", "v1.2.3"):
        assert redact(line) == line


def test_it_redacts_log_records_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("amparo.test")
    log.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="amparo.test"):
            log.info("chat %s says hi", 7319046682)
            try:
                raise ValueError("bad chat 7319046682")
            except ValueError:
                log.exception("failed")
    finally:
        log.filters.clear()
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "7319046682" not in text
    assert "ValueError" in text


@pytest.fixture
def configured() -> Iterator[Callable[[str], None]]:
    """core.logs.configure, with the root logger and the libraries' levels put back after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in (*QUIET, LIFECYCLE, "somelib")}
    yield configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def photo_with_owner() -> bytes:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "CANARY-MAKE"
    exif[0x013B] = "CANARY-OWNER Maria Lopez"  # Artist: phones and cameras put the owner here
    exif[0xA431] = "CANARY-SERIAL-4471"  # BodySerialNumber
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_evidence_metadata_stays_out_of_a_debug_log(
    configured: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """AMPARO_LOG_LEVEL=DEBUG, turned on to chase a problem: Pillow wrote every EXIF tag of
    each evidence photo (the owner's name, the camera's serial) to the log (R26)."""
    data = photo_with_owner()
    configured("DEBUG")
    assert media.preview(data) is not None  # what a report's evidence goes through on arrival
    media.inspect(data)
    logging.getLogger("amparo.test").debug("our own debug line")
    err = capsys.readouterr().err
    assert "our own debug line" in err  # the level really was DEBUG
    leaked = [c for c in ("CANARY-MAKE", "CANARY-OWNER", "CANARY-SERIAL") if c in err]
    assert leaked == [], err[:600]


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR"])
def test_libraries_log_at_warning_or_above_whatever_the_level(
    configured: Callable[[str], None], capsys: pytest.CaptureFixture[str], level: str
) -> None:
    configured(level)
    floor = max(logging.WARNING, logging.getLevelNamesMapping()[level])
    for name in ("somelib.sub", "httpx", "PIL.TiffImagePlugin"):
        for at in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            logging.getLogger(name).log(at, "%s line at %s", name, logging.getLevelName(at))
    logging.getLogger("amparo.x").log(logging.getLevelNamesMapping()[level], "ours at level")
    err = capsys.readouterr().err
    assert "ours at level" in err
    for name in ("somelib.sub", "httpx", "PIL.TiffImagePlugin"):
        for at in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            line = f"{name} line at {logging.getLevelName(at)}"
            assert (line in err) == (at >= floor), (line, err)
    # uvicorn's own lifecycle lines (no request in them) keep INFO, never DEBUG.
    for at in (logging.DEBUG, logging.INFO):
        logging.getLogger(LIFECYCLE).log(at, "lifecycle at %s", logging.getLevelName(at))
    err = capsys.readouterr().err
    assert "lifecycle at DEBUG" not in err
    assert ("lifecycle at INFO" in err) == (level in ("DEBUG", "INFO"))


def test_a_line_says_its_allowlisted_details_and_nothing_else() -> None:
    """The details passed as ``extra`` were never written ("getUpdates failed", and no why);
    now the allowlisted ones are, redacted like the message, and no other."""
    record = logging.LogRecord(
        "amparo.x", logging.WARNING, __file__, 1, "getUpdates failed", None, None
    )
    record.error = "InvalidToken"
    record.update = 812
    record.text = "they are at the door"  # message text: never a logged field
    record.chat = "7319046682"
    RedactingFilter().filter(record)
    line = record.getMessage()
    assert line == "getUpdates failed error=InvalidToken update=812", line
    RedactingFilter().filter(record)  # a second handler's filter changes nothing
    assert record.getMessage() == line


def test_uvicorns_own_logging_config_cannot_bypass_redaction(
    configured: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """A uvicorn.Config built with uvicorn's logging config gives its loggers handlers of their
    own that stop there: their lines would skip redaction (and our level floor)."""
    import uvicorn

    uvicorn.Config(app=lambda *_: None)  # uvicorn's default logging config, as a library's
    configured("INFO")
    logging.getLogger(LIFECYCLE).info("started for chat 7319046682")
    err = capsys.readouterr().err
    assert "started for chat <number>" in err, err
