"""Settings: environment and .env, clear errors, secrets that never show."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.cli import main
from bot.settings import SettingsError, load_settings, unknown_settings


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
        ("IPBOT_TELEGRAM_API_URL", "http://127.0.0.1:8081"),  # the token became its port
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


def test_a_postgres_url_as_providers_give_it_is_read_as_postgresql(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IPBOT_DATABASE_URL", "postgres://ipbot:pw@db.example:5432/ipbot")
    assert load_settings().database == "postgresql://ipbot:pw@db.example:5432/ipbot"


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


@pytest.fixture
def no_stray_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder without a .env and an environment without the caller's IPBOT_ names."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.upper().startswith("IPBOT_")]:
        monkeypatch.delenv(name)
    return tmp_path


def test_a_misspelt_name_in_the_env_file_is_named_with_the_setting_meant(
    no_stray_settings: Path,
) -> None:
    (no_stray_settings / ".env").write_text("IPBOT_TELEGRAM_TOKN=123:very-secret\n")
    [unknown] = unknown_settings()
    assert str(unknown) == (
        "IPBOT_TELEGRAM_TOKN in .env is not an ipbot setting, so it is ignored; "
        "did you mean IPBOT_TELEGRAM_TOKEN?"
    )
    assert "very-secret" not in repr(unknown)


def test_a_misspelt_name_in_the_environment_is_named_with_the_setting_meant(
    no_stray_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPBOT_MODERATOR", "telegram:12345")
    [unknown] = unknown_settings()
    assert str(unknown) == (
        "IPBOT_MODERATOR in the environment is not an ipbot setting, so it is ignored; "
        "did you mean IPBOT_MODERATORS?"
    )
    assert "12345" not in repr(unknown)


def test_a_name_like_no_setting_gets_no_guess(
    no_stray_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPBOT_COLOUR", "blue")
    [unknown] = unknown_settings()
    assert unknown.suggestion is None and "did you mean" not in str(unknown)


def test_settings_and_the_names_other_programs_read_give_no_warning(
    no_stray_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/x")
    monkeypatch.setenv("ipbot_top_k", "4")  # read without regard to case, as Settings does
    (no_stray_settings / ".env").write_text(
        "IPBOT_MODERATORS=telegram:1\nIPBOT_REPLICAS=3\nIPBOT_SEED_DIR=/opt/ipbot/seed\n"
        "POSTGRES_PASSWORD=not-ours\n"
    )
    assert unknown_settings() == []


def test_every_command_warns_of_a_misspelt_name_at_start_without_its_value(
    no_stray_settings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (no_stray_settings / ".env").write_text("IPBOT_TELEGRAM_TOKN=123:very-secret\n")
    assert main(["--version"]) == 0
    out, err = capsys.readouterr()
    assert (
        "WARNING ipbot: IPBOT_TELEGRAM_TOKN in .env is not an ipbot setting, so it is ignored; "
        "did you mean IPBOT_TELEGRAM_TOKEN?"
    ) in err
    assert "very-secret" not in out + err


def test_a_misspelt_name_is_warned_of_before_the_error_it_causes(
    no_stray_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPBOT_TELEGRAM_TOKEN", "123:abc")
    monkeypatch.setenv("IPBOT_HTTP_PORT", "8080")
    monkeypatch.setenv("IPBOT_TELEGRAM_WEBHOOK_URL", "https://bot.example.org/telegram/ipbot")
    monkeypatch.setenv("IPBOT_TELEGRAM_WEBHOOK_SECRT", "x" * 32)
    assert main(["--version"]) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.endswith("did you mean IPBOT_TELEGRAM_WEBHOOK_SECRET?")
    assert "needs IPBOT_TELEGRAM_WEBHOOK_SECRET too" in error
