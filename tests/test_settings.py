"""Settings: environment and .env, clear errors, secrets that never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("IPBOT_TOP_K=5\nIPBOT_MODERATORS=telegram:1,discord:2\n")
    settings = load_settings()
    assert settings.top_k == 5 and settings.moderators == ["telegram:1", "discord:2"]


def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPBOT_INDEX_TYPE", "btree")
    with pytest.raises(SettingsError, match="IPBOT_INDEX_TYPE"):
        load_settings()


def test_tokens_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPBOT_TELEGRAM_TOKEN", "123:very-secret")
    settings = load_settings()
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings.model_dump())
    assert (
        settings.telegram_token and settings.telegram_token.get_secret_value() == "123:very-secret"
    )
