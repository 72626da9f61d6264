"""Logs a collector can parse: with IPBOT_LOG_FORMAT=json every line from every logger is one
JSON object, and neither a token nor a user's question ever appears in it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot import logs, redact
from retrieval.search import Retriever
from tests.conftest import ipbot_env, ipbot_running
from tests.fakes.telegram_server import USER_ID, FakeTelegram
from tests.test_runner import free_port

QUESTION = "Who owns the results of our joint research project with Acme Widgets?"
SECRET = "AAFakeSecretTokenThatMustNeverBeLogged"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as a JSON object; fails naming the first line that is not one."""
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    assert all(isinstance(entry, dict) for entry in parsed)
    return parsed


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    """Logging configured as `ipbot run` does with IPBOT_LOG_FORMAT=json, into a buffer."""
    stream = io.StringIO()
    redact.install([SECRET])
    logs.configure(logging.INFO, "json", stream)
    yield stream
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "ipbot"]:
        root.removeHandler(handler)
    logging.captureWarnings(False)
    redact.install([])


def test_every_logger_writes_one_json_object_per_line(json_stream: io.StringIO) -> None:
    logging.getLogger("bot.assistant").info("question answered=%s area=%s", True, "valuation")
    logging.getLogger("telegram.ext.Updater").warning("polling failed\nretrying")
    logging.getLogger("discord.gateway").debug("below the level: not written")

    entries = json_lines(json_stream.getvalue())

    assert [(e["level"], e["logger"], e["event"]) for e in entries] == [
        ("info", "bot.assistant", "question answered=True area=valuation"),
        ("warning", "telegram.ext.Updater", "polling failed\nretrying"),
    ]
    assert all(e["time"].endswith("Z") for e in entries)


def test_a_traceback_is_one_json_field_with_the_token_redacted(json_stream: io.StringIO) -> None:
    try:
        raise ConnectionError(f"POST https://api.telegram.org/bot7000000001:{SECRET}/getMe")
    except ConnectionError:
        logging.getLogger("telegram.ext.Application").exception("handling update 5 failed")

    [entry] = json_lines(json_stream.getvalue())

    assert entry["level"] == "error" and "ConnectionError" in entry["exception"]
    assert "<redacted>" in entry["exception"] and SECRET not in json_stream.getvalue()


@pytest.mark.slow
async def test_run_with_json_logs_serves_http_and_writes_no_token_or_question(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    async with FakeTelegram() as telegram:
        env = ipbot_env(
            data_dir,
            IPBOT_TELEGRAM_TOKEN=telegram.token,
            IPBOT_TELEGRAM_API_URL=telegram.base_url,
            IPBOT_LOG_FORMAT="json",
            IPBOT_HTTP_PORT=str(port),
        )
        async with ipbot_running(env, tmp_path) as process:
            await telegram.next_call("setMyCommands", timeout=120)
            telegram.private_message(QUESTION)
            answered = await telegram.replies_in(USER_ID)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                    healthy = health.status
                async with session.get(f"http://127.0.0.1:{port}/readyz") as ready:
                    readiness = ready.status, await ready.json()
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
    entries = json_lines(log)

    assert answered and healthy == 200 and readiness[0] == 200, (readiness, log[-2000:])
    assert code == 0, log[-2000:]
    assert any(e["event"].startswith("Telegram: answering as") for e in entries)
    assert SECRET not in log and "Acme Widgets" not in log
