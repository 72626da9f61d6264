"""Settings from the environment (prefix IPBOT_) or a `.env` file: the one place they are read.

Tokens are SecretStr so they never appear in a log line or a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from retrieval.abstention import AbstentionPolicy
from retrieval.corpus import STALE_AFTER_DAYS
from retrieval.embedder import DEFAULT_MODEL

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_corpus_dir() -> Path:
    """The corpus next to the code (a source checkout), else `./corpus`."""
    shipped = PROJECT_ROOT / "corpus"
    return shipped if shipped.is_dir() else Path("corpus")


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable to fix."""


class Settings(BaseSettings):
    """Everything an operator can configure, with defaults that run on a laptop."""

    model_config = SettingsConfigDict(
        env_prefix="IPBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    corpus_dir: Path = Field(default_factory=_default_corpus_dir)
    data_dir: Path = Path("data")
    model: str = DEFAULT_MODEL
    index_type: str = "flat"
    top_k: int = Field(3, ge=1, le=10)
    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org/bot"
    discord_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_guild_id: int | None = None
    discord_threads: bool = True
    moderators: Annotated[list[str], NoDecode] = Field(default_factory=list)
    database_url: str | None = None
    log_level: str = "INFO"
    rate_limit_per_minute: int = Field(10, ge=1)
    stale_after_days: int = Field(STALE_AFTER_DAYS, ge=1)
    abstain_min_score: float = Field(AbstentionPolicy.min_score, ge=-1, le=1)
    abstain_confident_score: float = Field(AbstentionPolicy.confident_score, ge=-1, le=1)
    abstain_min_lexical: float = Field(AbstentionPolicy.min_lexical, ge=0)
    abstain_min_margin: float = Field(AbstentionPolicy.min_margin, ge=0, le=2)

    @field_validator("index_type")
    @classmethod
    def _known_index_type(cls, value: str) -> str:
        if value not in ("flat", "hnsw"):
            raise ValueError("must be 'flat' or 'hnsw'")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

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

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ipbot.db'}"

    @property
    def policy(self) -> AbstentionPolicy:
        return AbstentionPolicy(
            min_score=self.abstain_min_score,
            confident_score=self.abstain_confident_score,
            min_lexical=self.abstain_min_lexical,
            min_margin=self.abstain_min_margin,
        )


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning validation errors into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "IPBOT_" + str(first["loc"][0]).upper() if first["loc"] else "IPBOT_*"
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
