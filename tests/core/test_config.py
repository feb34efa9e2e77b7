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
