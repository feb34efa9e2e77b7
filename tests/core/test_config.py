from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import ConfigError, Mode, Settings


def test_it_defaults_to_sqlite_under_var() -> None:
    s = Settings()
    assert s.data_dir == Path("var")
    assert s.db_url == f"sqlite+aiosqlite:///{Path('var').resolve() / 'amparo.db'}"
    assert s.key_file == Path("var/master.key")
    assert (s.host, s.port, s.mode) == ("127.0.0.1", 8000, Mode.development)


def test_it_reads_amparo_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AMPARO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AMPARO_DATABASE_URL", "postgresql+asyncpg://a@db/amparo")
    monkeypatch.setenv("AMPARO_TELEGRAM_TOKEN", "123:abc")
    s = Settings()
    assert s.db_url == "postgresql+asyncpg://a@db/amparo"
    assert not s.is_embedded_sqlite
    assert s.telegram_token is not None and s.telegram_token.get_secret_value() == "123:abc"
    assert "123:abc" not in repr(s)


def test_it_refuses_production_without_a_key_file(tmp_path: Path) -> None:
    s = Settings(mode=Mode.production, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="master.key"):
        s.check_production()
    (tmp_path / "master.key").write_text("{}")
    s.check_production()


def test_it_refuses_a_short_webhook_secret() -> None:
    with pytest.raises(ValidationError, match="32 characters"):
        Settings(
            telegram_webhook_url="https://x.example/hooks/telegram",
            telegram_webhook_secret="short",
        )


def test_it_refuses_a_webhook_secret_telegram_refuses() -> None:
    """setWebhook answers 400 to any other character (a base64 secret from `openssl rand
    -base64 32`): the bot would never receive a message."""
    url = "https://x.example/hooks/telegram"
    for secret in ("q1Zx+/8rT0kPq1Zx+/8rT0kPq1Zx+/8rT0kPq1Zx+/8=", "a" * 40 + " ", "s" * 257):
        with pytest.raises(ValidationError, match="AMPARO_TELEGRAM_WEBHOOK_SECRET may hold only"):
            Settings(telegram_webhook_url=url, telegram_webhook_secret=secret)
    Settings(telegram_webhook_url=url, telegram_webhook_secret="aZ09_-" * 6)
    Settings(telegram_webhook_url=url, telegram_webhook_secret="s" * 256)


def test_production_refuses_a_plain_http_webhook_url() -> None:
    """Telegram posts only to https:// (setWebhook would fail at every start)."""
    secret = "s" * 40
    for url in ("http://desk.example.org/hooks/telegram", "desk.example.org/hooks/telegram"):
        with pytest.raises(ValidationError, match="AMPARO_TELEGRAM_WEBHOOK_URL must start with"):
            Settings(
                mode=Mode.production, telegram_webhook_url=url, telegram_webhook_secret=secret
            )
        Settings(telegram_webhook_url=url, telegram_webhook_secret=secret)  # a local stand-in
    Settings(
        mode=Mode.production,
        telegram_webhook_url="HTTPS://desk.example.org/hooks/telegram",
        telegram_webhook_secret=secret,
    )


def test_an_empty_setting_is_as_if_it_were_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """`AMPARO_TELEGRAM_TOKEN=` (a line left empty in .env) started the Telegram channel with
    an empty token, which crashed with a traceback."""
    names = (
        "TELEGRAM_TOKEN",
        "TELEGRAM_API_URL",
        "TELEGRAM_WEBHOOK_URL",
        "TELEGRAM_WEBHOOK_SECRET",
        "SIGNAL_SERVICE",
        "SIGNAL_NUMBER",
        "HEARTBEAT_URL",
        "METRICS_TOKEN",
        "MASTER_KEY_FILE",
        "DATABASE_URL",
        "DATA_DIR",
        "HOST",
        "LOG_LEVEL",
    )
    for name in names:
        monkeypatch.setenv(f"AMPARO_{name}", " " if name == "HOST" else "")
    s = Settings()
    assert (s.telegram_token, s.telegram_webhook_url, s.signal_service, s.metrics_token) == (
        None,
        None,
        None,
        None,
    )
    assert s.telegram_api_url == "https://api.telegram.org/bot" and s.host == "127.0.0.1"
    assert s.key_file == Path("var/master.key") and s.log_level == "INFO"


def test_it_refuses_what_cannot_be_a_bot_token_or_a_log_level() -> None:
    with pytest.raises(ValidationError, match="not a bot token"):
        Settings(telegram_token="the token from BotFather")
    with pytest.raises(ValidationError, match="must be one of DEBUG"):
        Settings(log_level="verbose")
    assert Settings(log_level="debug").log_level == "DEBUG"


def test_production_without_a_heartbeat_is_unwatched(tmp_path: Path) -> None:
    """R27: the engine warns at start when nothing outside would notice it stopping."""
    assert Settings(mode=Mode.production, data_dir=tmp_path).unwatched
    ping = "https://hc.example/ping/x"
    assert not Settings(mode=Mode.production, data_dir=tmp_path, heartbeat_url=ping).unwatched
    assert not Settings(data_dir=tmp_path).unwatched  # development: a laptop
