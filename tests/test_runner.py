"""`ipbot run` as operators start it: both platforms in one process, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.search import Retriever
from tests.conftest import CORPUS_DIR, ROOT
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.slow
QUESTION = "Who owns the results of a joint research project?"


def run_env(data_dir: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPBOT_")}
    env.update(IPBOT_DATA_DIR=str(data_dir), IPBOT_CORPUS_DIR=str(CORPUS_DIR), PYTHONPATH=str(ROOT))
    return {**env, **variables}


async def test_run_serves_telegram_and_discord_together_and_stops_on_sigterm(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    discord = FakeDiscord()
    await discord.start()
    async with FakeTelegram() as telegram:
        env = run_env(
            data_dir,
            IPBOT_TELEGRAM_TOKEN=telegram.token,
            IPBOT_TELEGRAM_API_URL=telegram.base_url,
            IPBOT_DISCORD_TOKEN="fake-discord-token",
            IPBOT_DISCORD_API_URL=discord.api_url,
            IPBOT_DISCORD_GATEWAY_URL=discord.gateway_url,
        )
        log_file = tmp_path / "ipbot.log"
        with log_file.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "run",
                cwd=tmp_path,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            try:
                await telegram.next_call("setMyCommands", timeout=120)
                await discord.wait_until_ready()
                telegram.private_message(QUESTION)
                telegram_reply = await telegram.next_call("sendMessage")
                mark = len(discord.calls)
                dm = await discord.post_message(QUESTION, dm=True)
                discord_reply = await discord.next_call(
                    mark, "POST", rf"/channels/{dm['channel_id']}/messages"
                )
                process.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(process.wait(), timeout=15)
            finally:
                if process.returncode is None:
                    process.kill()
    await discord.stop()
    log = log_file.read_text(errors="replace")
    assert "<a href=" in telegram_reply.text, log[-2000:]
    assert discord_reply.message and discord_reply.message["embeds"], log[-2000:]
    assert code == 0, log[-2000:]


def test_run_without_tokens_starts_the_console_chat(
    data_dir: Path, retriever: Retriever, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        input="what is a consortium agreement?\n/quit\n",
        capture_output=True,
        text=True,
        env=run_env(data_dir),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "No chat token is set" in result.stderr
    assert "Source:" in result.stdout and "consortium" in result.stdout.lower()
