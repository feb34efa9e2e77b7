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
