"""Settings from the environment (prefix ``AMPARO_``, also read from ``.env``)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.i18n import operator_gettext as _

# What Telegram accepts as setWebhook's secret_token (1-256 of A-Z a-z 0-9 _ -); ours is at
# least 32 characters.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{32,256}")


_BOT_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Mode(StrEnum):
    development = "development"
    production = "production"


class ConfigError(Exception):
    """The settings cannot work; the message says which one and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AMPARO_", env_file=".env", extra="ignore", frozen=True
    )

    mode: Mode = Mode.development
    data_dir: Path = Path("var")
    database_url: str = ""  # empty: an SQLite file in data_dir
    master_key_file: Path | None = None  # None: data_dir/master.key
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org/bot"
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    # The bot-wide send rate (messages per second): 30 for a normal bot; paid broadcasts
    # allow up to 1,000.
    telegram_rate: float = 30.0
    # Messages per second to one chat, on every channel (Telegram asks about 1; faster bursts
    # are answered with 429 and retried). A test against a stand-in may raise it.
    chat_rate: float = 1.0
    signal_service: str | None = None
    signal_number: str | None = None
    # /metrics answers direct loopback connections only; with this token (at least 32
    # characters), also a scraper elsewhere that sends "Authorization: Bearer <token>".
    metrics_token: SecretStr | None = None
    # Pinged (GET) after each successful sweep, at most every 30 s (a dead-man's switch).
    heartbeat_url: str | None = None
    # The TLS proxy's address(es) (comma-separated; networks allowed): only their
    # X-Forwarded-For is believed, so each client keeps its own login-attempt budget instead
    # of every client sharing the proxy's (which would be a global lockout).
    trusted_proxies: str = "127.0.0.1"
    # Let organisations' webhooks reach private addresses (a desk system on this network).
    # Off: in production they reach public addresses only (core.destinations).
    webhook_allow_private: bool = False

    @field_validator(
        "data_dir",
        "database_url",
        "master_key_file",
        "host",
        "log_level",
        "telegram_token",
        "telegram_api_url",
        "telegram_webhook_url",
        "telegram_webhook_secret",
        "signal_service",
        "signal_number",
        "metrics_token",
        "heartbeat_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """``AMPARO_TELEGRAM_TOKEN=`` (a line left empty in .env) is as if it were absent: the
        channel stays off, instead of starting with an empty token."""
        if isinstance(value, str) and not value.strip() and info.field_name:
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in _LOG_LEVELS:
            raise ValueError("must be one of " + ", ".join(_LOG_LEVELS))
        return value.upper()

    @field_validator("telegram_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _BOT_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("not a bot token (digits, a colon, then letters, digits, _ and -)")
        return value

    @property
    def webhooks_public_only(self) -> bool:
        return self.mode is Mode.production and not self.webhook_allow_private

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.port <= 0 or self.port > 65535:
            raise ValueError("AMPARO_PORT must be between 1 and 65535")
        if not 0 < self.telegram_rate <= 1000:
            raise ValueError("AMPARO_TELEGRAM_RATE must be above 0 and at most 1000")
        if not 0 < self.chat_rate <= 100:
            raise ValueError("AMPARO_CHAT_RATE must be above 0 and at most 100")
        secret = self.telegram_webhook_secret
        if self.telegram_webhook_url and (secret is None or len(secret.get_secret_value()) < 32):
            raise ValueError("AMPARO_TELEGRAM_WEBHOOK_SECRET must be at least 32 characters")
        if self.telegram_webhook_url and not _WEBHOOK_SECRET.fullmatch(
            secret.get_secret_value() if secret else ""
        ):
            raise ValueError(
                "AMPARO_TELEGRAM_WEBHOOK_SECRET may hold only letters A-Z a-z, digits, _ and -, "
                "at most 256 (Telegram refuses any other)"
            )
        if (
            self.mode is Mode.production
            and self.telegram_webhook_url
            and not self.telegram_webhook_url.lower().startswith("https://")
        ):
            raise ValueError(
                "AMPARO_TELEGRAM_WEBHOOK_URL must start with https:// (Telegram posts to no other)"
            )
        if self.metrics_token is not None and len(self.metrics_token.get_secret_value()) < 32:
            raise ValueError("AMPARO_METRICS_TOKEN must be at least 32 characters")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'amparo.db'}"

    @property
    def key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def is_embedded_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def unwatched(self) -> bool:
        """Production without a heartbeat URL (R27): should the engine's process die or hang,
        nothing outside this machine would notice that missed check-ins stop escalating."""
        return self.mode is Mode.production and not self.heartbeat_url

    def check_production(self) -> None:
        """Production never invents keys: the master key file must already exist."""
        if self.mode is Mode.production and not self.key_file.is_file():
            raise ConfigError(
                _(
                    "production mode needs the master key file {path}; "
                    "create it with 'amparo keys init' on a trusted machine"
                ).format(path=self.key_file)
            )
