"""Proxies from the environment, read as httpx and curl read them."""

from __future__ import annotations

import pytest

from core.proxies import Proxies, proxy_for


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)


def test_each_scheme_has_its_proxy_all_covers_the_rest_and_no_proxy_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert proxy_for("https://api.telegram.org/bot1:x/getMe") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://tls-proxy:3128")
    monkeypatch.setenv("ALL_PROXY", "http://any-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.internal")
    assert proxy_for("https://api.telegram.org/bot1:x/getMe") == "http://tls-proxy:3128"
    assert proxy_for("http://desk.example/hook") == "http://any-proxy:3128"
    assert proxy_for("http://127.0.0.1:8080/hook") is None
    assert proxy_for("https://desk.internal/hook") is None


def test_a_client_reads_the_environment_once_per_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    proxies = Proxies()
    monkeypatch.setenv("https_proxy", "http://first:3128")
    assert proxies("https://api.telegram.org/bot1:x/getMe") == "http://first:3128"
    monkeypatch.setenv("https_proxy", "http://second:3128")
    assert proxies("https://api.telegram.org/bot1:x/sendMessage") == "http://first:3128"
    assert proxies("https://desk.example/hook") == "http://second:3128"
