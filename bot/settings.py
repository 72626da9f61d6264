"""Settings from the environment (prefix IPBOT_) or a `.env` file: the one place they are read.

Tokens are SecretStr so they never appear in a log line or a traceback. A misspelt name would
be ignored without a word, so `unknown_settings` names every IPBOT_ variable no setting reads.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from retrieval.abstention import AbstentionPolicy
from retrieval.corpus import STALE_AFTER_DAYS
from retrieval.embedder import DEFAULT_MODEL
from retrieval.evaluate import DEFAULT_EVAL_FILE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "IPBOT_"
# IPBOT_ variables that other programs read, on purpose not settings: they must not warn.
NOT_SETTINGS = {
    "IPBOT_TEST_POSTGRES_URL": "the tests' PostgreSQL server (tests/conftest.py, .ci/run)",
    "IPBOT_REPLICAS": "compose's replica count, from deploy/.env, which also feeds the container",
    "IPBOT_SEED_DIR": "the image's seed of model and index (deploy/entrypoint.sh)",
}


def _default_corpus_dir() -> Path:
    """The corpus next to the code (a source checkout), else `./corpus`."""
    shipped = PROJECT_ROOT / "corpus"
    return shipped if shipped.is_dir() else Path("corpus")


MODERATOR = re.compile(r"(telegram|discord|discord-role):\d+")
WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")  # Telegram allows 1-256 of these; 16+ is ours
WEBHOOK_PATH = re.compile(r"/telegram/[A-Za-z0-9_.~-]+")
URL_SCHEMES = {
    "telegram_api_url": ("http", "https"),
    "discord_api_url": ("http", "https"),
    "discord_gateway_url": ("ws", "wss"),
}


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable to fix."""


class Settings(BaseSettings):
    """Everything an operator can configure, with defaults that run on a laptop."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    corpus_dir: Path = Field(default_factory=_default_corpus_dir)
    data_dir: Path = Path("data")
    model: str = DEFAULT_MODEL
    index_type: str = "auto"  # exact search for small corpora, HNSW for large (index.py)
    multilingual: bool = True  # questions in other languages through the multilingual model
    int8: bool = True  # MiniLM quantised to int8: faster, recall within a point (performance.md)
    top_k: int = Field(3, ge=1, le=10)
    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org/bot"
    discord_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_guild_id: int | None = None
    discord_threads: bool = True
    telegram_channel: str | None = None  # @name or id of a channel the bot posts updates to
    discord_announcement_channel: int | None = None  # updates are posted and crossposted
    feeds: bool = True  # Atom feeds of published updates in the data folder
    eval_file: Path = DEFAULT_EVAL_FILE  # the test questions a /reload must not answer worse
    discord_dm_limit: int = Field(1000, ge=0)  # Discord DM subscriptions, at most
    discord_shards: int | None = Field(None, ge=1)  # gateway shards, all run by one process
    question_retention_days: int = Field(90, ge=1)  # stored questions are deleted after this
    moderators: Annotated[list[str], NoDecode] = Field(default_factory=list)
    database_url: str | None = None
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    http_port: int | None = Field(None, ge=1, le=65535)  # health, metrics, feeds, webhook
    http_host: str = "127.0.0.1"
    telegram_webhook_url: str | None = None  # set: Telegram pushes updates instead of polling
    telegram_webhook_secret: SecretStr | None = None
    rate_limit_per_minute: int = Field(10, ge=1)
    stale_after_days: int = Field(STALE_AFTER_DAYS, ge=1)
    abstain_min_score: float = Field(AbstentionPolicy.min_score, ge=-1, le=1)
    abstain_min_in_scope: float = Field(AbstentionPolicy.min_in_scope, ge=0, le=1)

    @field_validator("index_type")
    @classmethod
    def _known_index_type(cls, value: str) -> str:
        if value not in ("auto", "flat", "hnsw"):
            raise ValueError("must be 'auto', 'flat' or 'hnsw'")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("telegram_token", "discord_token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: object) -> object:
        """An empty or whitespace token (a stray `IPBOT_TELEGRAM_TOKEN=`) means not set."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("telegram_api_url", "discord_api_url", "discord_gateway_url")
    @classmethod
    def _url_with_scheme(cls, value: str, info: ValidationInfo) -> str:
        """A typo here would otherwise surface as a confusing network error, or not at all."""
        schemes = URL_SCHEMES[str(info.field_name)]
        parts = urlsplit(value.strip())
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"must be a {' or '.join(schemes)} URL with a host, not {value!r}")
        if info.field_name == "telegram_api_url" and not parts.path.rstrip("/").endswith("/bot"):
            # the library puts the token right after it: without /bot it became the port
            raise ValueError(f"must end with /bot, as https://api.telegram.org/bot, not {value!r}")
        if info.field_name == "telegram_api_url":
            return value.strip().rstrip("/")  # ".../bot/" + token is no Bot API address
        return value.strip()

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("http_port", "telegram_webhook_url", "telegram_webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        """Telegram only calls https URLs; the path is the route ipbot serves (see http.py)."""
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"must be an https URL with a host, not {value!r}")
        if not WEBHOOK_PATH.fullmatch(parts.path) or parts.query or parts.fragment:
            raise ValueError("its path must be /telegram/NAME (letters, digits, - _ . ~)")
        return value.strip()

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 16 to 256 letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _webhook_needs_its_parts(self) -> Settings:
        """Webhook mode without a secret would let anyone post updates as Telegram."""
        if self.telegram_webhook_url is None:
            return self
        missing = [
            name
            for name, value in (
                ("IPBOT_TELEGRAM_WEBHOOK_SECRET", self.telegram_webhook_secret),
                ("IPBOT_HTTP_PORT", self.http_port),
                ("IPBOT_TELEGRAM_TOKEN", self.telegram_token),
            )
            if value is None
        ]
        if missing:
            raise ValueError(f"IPBOT_TELEGRAM_WEBHOOK_URL needs {' and '.join(missing)} too")
        return self

    @property
    def telegram_webhook_path(self) -> str | None:
        """The route that receives Telegram's updates: the webhook URL's own path."""
        return urlsplit(self.telegram_webhook_url).path if self.telegram_webhook_url else None

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.startswith("postgres://"):  # what many providers hand out; libpq reads both
            value = "postgresql://" + value.removeprefix("postgres://")
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError("must be an SQLAlchemy URL such as sqlite:///data/ipbot.db") from None
        return value

    @field_validator("moderators", mode="before")
    @classmethod
    def _split_moderators(cls, value: object) -> object:
        """Accept `telegram:123,discord:456` as well as a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("moderators")
    @classmethod
    def _known_moderators(cls, value: list[str]) -> list[str]:
        """A mistyped entry would silently give nobody moderator rights."""
        for entry in value:
            if not MODERATOR.fullmatch(entry):
                raise ValueError(
                    f"{entry!r} is not telegram:<user id>, discord:<user id> "
                    "or discord-role:<role id> (digits only)"
                )
        return value

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ipbot.db'}"

    @property
    def database_password(self) -> str | None:
        """The password inside IPBOT_DATABASE_URL, if any: a secret to keep out of logs."""
        return make_url(self.database_url).password if self.database_url else None

    @property
    def policy(self) -> AbstentionPolicy:
        return AbstentionPolicy(
            min_score=self.abstain_min_score,
            min_in_scope=self.abstain_min_in_scope,
        )


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning validation errors into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except UnicodeDecodeError:  # pydantic-settings reads .env as UTF-8
        raise SettingsError("the .env file is not valid UTF-8: save it as UTF-8") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a check across settings names its variables itself
            raise SettingsError(f"invalid settings: {message}") from None
        name = PREFIX + str(first["loc"][0]).upper()
        raise SettingsError(f"invalid setting {name}: {message}") from None


@dataclass(frozen=True)
class UnknownSetting:
    """An IPBOT_ variable that no setting reads, most likely a typo; only its name is kept, as
    its value may be a secret."""

    name: str
    where: str  # "the environment", or the .env file as Settings finds it
    suggestion: str | None  # the known name it is closest to, if any is close

    @property
    def what(self) -> str:
        return f"{self.name} in {self.where} is not an ipbot setting, so it is ignored"

    @property
    def fix(self) -> str:
        if self.suggestion:
            return f"did you mean {self.suggestion}?"
        return "remove it, or rename it to one of the settings listed in README.md"

    def __str__(self) -> str:
        return f"{self.what}; {self.fix}"


def unknown_settings() -> list[UnknownSetting]:
    """Every IPBOT_ name in the environment and the .env file that Settings would ignore."""
    found = _unknown_in(os.environ, "the environment")
    for env_file in _env_files():
        found += _unknown_in(_names_in(env_file), str(env_file))
    return found


def _unknown_in(names: Iterable[str], where: str) -> list[UnknownSetting]:
    """Names compare without case, as Settings reads them; suggestions come from the part after
    the prefix, which every name shares and which would make any two names look alike."""
    known = {PREFIX + name.upper() for name in Settings.model_fields} | NOT_SETTINGS.keys()
    stems = {name.removeprefix(PREFIX): name for name in known}
    found = []
    for name in names:
        upper = name.upper()
        if upper.startswith(PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper.removeprefix(PREFIX), stems, n=1)
            found.append(UnknownSetting(name, where, stems[close[0]] if close else None))
    return found


def _env_files() -> list[Path]:
    """The .env file(s) Settings reads: its `env_file`, relative to the working folder."""
    configured = Settings.model_config.get("env_file")
    if configured is None:
        return []
    paths = [configured] if isinstance(configured, str | Path) else list(configured)
    return [Path(path).expanduser() for path in paths]


def _names_in(env_file: Path) -> list[str]:
    """The names a .env file sets, read as Settings reads it; the values are dropped unseen.

    An unreadable or non-UTF-8 file gives none here: `load_settings` reports it.
    """
    if not env_file.is_file():
        return []
    encoding = Settings.model_config.get("env_file_encoding")
    try:
        return list(dotenv_values(env_file, encoding=encoding))
    except (OSError, UnicodeDecodeError):
        return []
