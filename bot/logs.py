"""Logging for every logger, ours and the libraries': readable lines, or one JSON object per
line (IPBOT_LOG_FORMAT=json) through structlog's ProcessorFormatter over stdlib logging.

Secrets are already redacted when a record is made (bot.redact); tracebacks are taken from
that redacted text, never formatted again from the live exception.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict

from bot import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _redacted_traceback(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """A traceback or stack as the redacted text bot.redact left on the record."""
    record: logging.LogRecord = event["_record"]
    exc_info = event.pop("exc_info", None)
    if exc_info:
        text = record.exc_text or logging.Formatter().formatException(exc_info)
        event["exception"] = redact.redact(text)
    if event.pop("stack_info", None):
        event["stack"] = redact.redact(record.stack_info or "")
    return event


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time (UTC), level, logger, event, exception if any."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _redacted_traceback,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )


def configure(level: str | int, form: str = "text", stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr) in the chosen form, replacing any
    handler set before (the command line configures once early, again once settings load)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if form == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name("ipbot")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "ipbot"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(form == "json")  # warnings too, as JSON lines


def failure(logger: logging.Logger, message: str, exc: BaseException, *args: object) -> None:
    """An error that repeats while its cause lasts (the database away) in one line, with the
    exception's repr; its traceback only at DEBUG (`--debug`), so that a console chat or a
    service log is not buried."""
    logger.error(
        message + ": %r", *args, exc, exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None
    )


def json_enabled() -> bool:
    """Whether lines for the operator must be JSON (the final error line too)."""
    return any(
        isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
        for h in logging.getLogger().handlers
    )
