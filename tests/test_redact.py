"""Secrets never reach a log line or the final error line, in any encoding a server echoes."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from bot import redact
from bot.settings import Settings

SECRET = "AAHsecretPart-of_the.token"
ENCODINGS = {
    "plain": lambda s: s,
    "url-encoded": lambda s: quote(s, safe=""),
    "url-encoded twice": lambda s: quote(quote(s, safe=""), safe=""),
    "every character URL-encoded": lambda s: "".join(f"%{ord(c):02x}" for c in s),
    "html decimal": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "html hex": lambda s: "".join(f"&#x{ord(c):X};" for c in s),
    "html escaped entity": lambda s: html.escape("".join(f"&#{ord(c)};" for c in s)),
    "json escape": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "named entities": lambda s: s.replace(".", "&period;").replace("_", "&lowbar;"),
}


@pytest.fixture
def installed() -> Iterator[None]:
    redact.install([SECRET])
    yield
    redact.install([])


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_the_secret_is_redacted_in_every_usual_encoding(encode) -> None:
    text = f"403 Forbidden for https://api.example/bot123{encode(':')}{encode(SECRET)}/getMe"
    redacted = redact.Redactor([SECRET])(text)
    assert encode(SECRET) not in redacted and redact.REDACTED in redacted
    assert "https://api.example/bot123" in redacted, "only the secret goes"


def test_the_secrets_come_from_the_settings() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        telegram_token="7000000001:AAFakeSecret",
        discord_token="MTA.discord.secret",
        database_url="postgresql+asyncpg://ipbot:p%40ss%3Aword@db.example/ipbot",
    )
    secrets = redact.settings_secrets(settings)
    line = redact.Redactor(secrets)(f"cannot connect to {settings.database_url} as 7000000001")
    assert secrets == ["AAFakeSecret", "MTA.discord.secret", "p@ss:word"]
    assert "p%40ss%3Aword" not in line and "7000000001" in line


def test_every_log_record_is_redacted_whichever_handler_writes_it(
    installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("some.library")
    log.warning("request to /bot1:%s failed", SECRET.replace(".", "&#46;"))
    try:
        raise RuntimeError(f"body echoed {quote(SECRET, safe='')}")
    except RuntimeError:
        log.exception("handling failed")

    assert redact.REDACTED in caplog.text and "echoed" in caplog.text
    assert SECRET not in caplog.text and quote(SECRET, safe="") not in caplog.text
    assert "AAHsecretPart" not in caplog.text
