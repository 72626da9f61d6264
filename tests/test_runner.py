"""`ipbot run` as operators start it: both platforms in one process, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.search import Retriever
from tests.conftest import ipbot_env, ipbot_running
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.slow
QUESTION = "Who owns the results of a joint research project?"


async def test_run_serves_telegram_and_discord_together_and_stops_on_sigterm(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    discord = FakeDiscord()
    await discord.start()
    async with FakeTelegram() as telegram:
        env = ipbot_env(
            data_dir,
            IPBOT_TELEGRAM_TOKEN=telegram.token,
            IPBOT_TELEGRAM_API_URL=telegram.base_url,
            IPBOT_DISCORD_TOKEN="fake-discord-token",
            IPBOT_DISCORD_API_URL=discord.api_url,
            IPBOT_DISCORD_GATEWAY_URL=discord.gateway_url,
        )
        async with ipbot_running(env, tmp_path) as process:
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
    await discord.stop()
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
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
        env=ipbot_env(data_dir),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "No chat token is set" in result.stderr
    assert "Source:" in result.stdout and "consortium" in result.stdout.lower()
