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


def test_an_env_file_that_is_not_utf8_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"IPBOT_TOP_K=5\nIPBOT_MODERATORS=telegram:caf\xe9\n")
    with pytest.raises(SettingsError, match=r"\.env file is not valid UTF-8"):
        load_settings()


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


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IPBOT_TELEGRAM_API_URL", "api.telegram.org/bot"),
        ("IPBOT_DISCORD_API_URL", "ftp://discord.com/api/v10"),
        ("IPBOT_DISCORD_GATEWAY_URL", "https://gateway.discord.gg/"),
        ("IPBOT_DATABASE_URL", "not a database"),
    ],
)
def test_a_url_setting_that_cannot_work_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_a_malformed_moderator_entry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPBOT_MODERATORS", "telegram:1,discord-role:22,discord:@alice")
    with pytest.raises(SettingsError, match="IPBOT_MODERATORS: 'discord:@alice'"):
        load_settings()


def test_moderator_entries_of_each_kind_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPBOT_MODERATORS", "telegram:1, discord:22 ,discord-role:333")
    assert load_settings().moderators == ["telegram:1", "discord:22", "discord-role:333"]


def test_a_blank_token_counts_as_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPBOT_TELEGRAM_TOKEN", "   ")
    monkeypatch.setenv("IPBOT_DISCORD_TOKEN", "")
    settings = load_settings()
    assert settings.telegram_token is None and settings.discord_token is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"IPBOT_HTTP_PORT": "70000"}, "IPBOT_HTTP_PORT"),
        ({"IPBOT_HTTP_PORT": "0"}, "IPBOT_HTTP_PORT"),
        ({"IPBOT_LOG_FORMAT": "xml"}, "IPBOT_LOG_FORMAT"),
        (
            {"IPBOT_TELEGRAM_WEBHOOK_URL": "http://bot.example.org/telegram/ipbot"},
            "IPBOT_TELEGRAM_WEBHOOK_URL: must be an https URL",
        ),
        (
            {"IPBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/hook"},
            "IPBOT_TELEGRAM_WEBHOOK_URL: its path must be /telegram/NAME",
        ),
        ({"IPBOT_TELEGRAM_WEBHOOK_SECRET": "short"}, "IPBOT_TELEGRAM_WEBHOOK_SECRET"),
        (
            {
                "IPBOT_TELEGRAM_TOKEN": "123:abc",
                "IPBOT_HTTP_PORT": "8080",
                "IPBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/telegram/ipbot",
            },
            "needs IPBOT_TELEGRAM_WEBHOOK_SECRET too",
        ),
    ],
)
def test_http_and_webhook_settings_that_cannot_work_are_named(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_webhook_mode_serves_the_path_of_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPBOT_TELEGRAM_TOKEN", "123:abc")
    monkeypatch.setenv("IPBOT_HTTP_PORT", "8080")
    monkeypatch.setenv("IPBOT_TELEGRAM_WEBHOOK_URL", "https://bot.example.org/telegram/ipbot")
    monkeypatch.setenv("IPBOT_TELEGRAM_WEBHOOK_SECRET", "x" * 32)
    settings = load_settings()
    assert settings.telegram_webhook_path == "/telegram/ipbot" and settings.http_port == 8080
    assert "x" * 32 not in repr(settings)
