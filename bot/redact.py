"""One process-wide redaction of secrets (chat tokens, the database password) in every log
record and in the final error line, whatever encoding a server or proxy echoed them in.
"""

from __future__ import annotations

import html.entities
import logging
import re
from collections.abc import Iterable

from bot.settings import Settings

REDACTED = "<redacted>"


def settings_secrets(settings: Settings) -> list[str]:
    """The secret parts of the configured credentials (and the webhook secret).

    A Telegram token is `<bot id>:<secret>`; the bot id is public (it is the bot's user id),
    so only the part after the colon is a secret. A Discord token is secret as a whole.
    """
    secrets: list[str] = []
    if settings.telegram_token is not None:
        secrets.append(settings.telegram_token.get_secret_value().partition(":")[2])
    if settings.discord_token is not None:
        secrets.append(settings.discord_token.get_secret_value())
    if settings.database_password:
        secrets.append(settings.database_password)
    if settings.telegram_webhook_secret is not None:
        secrets.append(settings.telegram_webhook_secret.get_secret_value())
    return [secret for secret in secrets if secret.strip()]


def _hex(number: int, width: int = 0) -> str:
    """A hexadecimal number that matches in either letter case."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


_NAMED_ENTITIES: dict[str, list[str]] = {}
for _name, _value in html.entities.html5.items():
    if len(_value) == 1 and _name.endswith(";"):
        _NAMED_ENTITIES.setdefault(_value, []).append(_name)


def _character(char: str) -> str:
    """One character of a secret as written plain, URL-encoded, as an HTML entity or \\u escape.

    Encodings may be nested (`%253A`, `&amp;#58;`), as when a proxy escapes an echoed URL.
    """
    percent = "".join(f"%(?:25)*{_hex(byte, 2)}" for byte in char.encode("utf-8"))
    code = ord(char)
    forms = [
        re.escape(char),
        percent,
        f"&(?:amp;)*#0*{code};?",
        f"&(?:amp;)*#[xX]0*{_hex(code)};?",
        rf"\\u{_hex(code, 4)}",
        *(f"&(?:amp;)*{re.escape(name)}" for name in _NAMED_ENTITIES.get(char, [])),
    ]
    if char == " ":
        forms.append(r"\+")
    return "(?:" + "|".join(forms) + ")"


def secret_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern that finds any of the secrets in any of their usual encodings."""
    unique = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not unique:
        return None
    return re.compile("|".join("".join(map(_character, secret)) for secret in unique))


class Redactor:
    """Replaces every occurrence of the secrets in a text."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.pattern = secret_pattern(secrets)

    def __call__(self, text: str) -> str:
        return self.pattern.sub(REDACTED, text) if self.pattern else text

    def record(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record with its message, traceback and stack already formatted and redacted."""
        if self.pattern is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: the handler reports it, args withheld
            message = f"{record.msg} (unformattable arguments)"
        record.msg, record.args = self(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self(record.exc_text)
        if record.stack_info:
            record.stack_info = self(record.stack_info)
        return record


_active = Redactor()
_installed = False


def redact(text: str) -> str:
    """The text with every installed secret replaced: for lines printed outside logging."""
    return _active(text)


def install(secrets: Iterable[str]) -> None:
    """Redact these secrets in every log record from now on, whichever handler writes it.

    Records are redacted where they are made (the log record factory), so handlers added
    later, by a library or a test, never see a secret either.
    """
    global _active, _installed
    _active = Redactor(secrets)
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacted_record(*args: object, **kwargs: object) -> logging.LogRecord:
        return _active.record(make_record(*args, **kwargs))

    logging.setLogRecordFactory(redacted_record)
    _installed = True
