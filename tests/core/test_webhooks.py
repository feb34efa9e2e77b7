"""Desk webhook signatures (SECURITY.md R5): what a receiver accepts and rejects."""

from __future__ import annotations

import hashlib
import hmac
import json

from core.webhook_secrets import signature, verify

BODY = json.dumps({"event_id": "e1", "type": "alert.triggered"}, separators=(",", ":")).encode()
OLD, NEW = b"old-secret", b"new-secret"
T = 1_790_000_000


def test_it_signs_t_dot_raw_body_with_hmac_sha256() -> None:
    header = signature([NEW], BODY, T)
    expected = hmac.new(NEW, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"
    assert verify(header, BODY, [NEW], now=T + 5)


def test_it_rejects_a_tampered_or_reserialised_body() -> None:
    header = signature([NEW], BODY, T)
    assert not verify(header, BODY.replace(b"e1", b"e2"), [NEW], now=T)
    assert not verify(header, json.dumps(json.loads(BODY)).encode(), [NEW], now=T)  # spaces


def test_it_rejects_stale_and_future_timestamps() -> None:
    header = signature([NEW], BODY, T)
    assert not verify(header, BODY, [NEW], now=T + 301)
    assert not verify(header, BODY, [NEW], now=T - 301)
    assert verify(header, BODY, [NEW], now=T + 300)


def test_it_signs_with_both_secrets_during_a_rotation() -> None:
    header = signature([NEW, OLD], BODY, T)
    assert header.count("v1=") == 2
    assert verify(header, BODY, [OLD], now=T) and verify(header, BODY, [NEW], now=T)
    assert not verify(signature([NEW], BODY, T), BODY, [OLD], now=T)


def test_it_rejects_malformed_headers() -> None:
    for header in ("", "t=abc,v1=00", f"v1={'0' * 64}", f"t={T},t={T},v1=00", "garbage"):
        assert not verify(header, BODY, [NEW], now=T)
