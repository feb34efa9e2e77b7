from __future__ import annotations

import logging

import pytest

from core.logs import RedactingFilter, redact


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
