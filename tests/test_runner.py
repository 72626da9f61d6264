"""`ipbot run` as operators start it: both platforms in one process, each surviving the
other's trouble, ended by SIGTERM (exit 0) or by a platform that can no longer work (non-zero)."""

from __future__ import annotations

import asyncio
import logging
import os
import pty
import signal
import socket
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


def both_platforms(data_dir: Path, telegram: FakeTelegram, discord_url: str) -> dict[str, str]:
    """The environment of `ipbot run` with Telegram and Discord, Discord at `discord_url`."""
    return ipbot_env(
        data_dir,
        IPBOT_TELEGRAM_TOKEN=telegram.token,
        IPBOT_TELEGRAM_API_URL=telegram.base_url,
        IPBOT_DISCORD_TOKEN="fake-discord-token",
        IPBOT_DISCORD_API_URL=f"http://{discord_url}/api/v10",
        IPBOT_DISCORD_GATEWAY_URL=f"ws://{discord_url}/gateway",
    )


async def telegram_answers(telegram: FakeTelegram) -> bool:
    telegram.private_message(QUESTION)
    return "<a href=" in (await telegram.next_call("sendMessage")).text


async def discord_answers(discord: FakeDiscord) -> bool:
    mark = len(discord.calls)
    dm = await discord.post_message(QUESTION, dm=True)
    reply = await discord.next_call(mark, "POST", rf"/channels/{dm['channel_id']}/messages")
    return bool(reply.message and reply.message["embeds"])


async def stopped_by_sigterm(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout=15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_run_serves_telegram_and_discord_together_and_stops_on_sigterm(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    discord = FakeDiscord()
    await discord.start()
    async with FakeTelegram() as telegram:
        env = both_platforms(data_dir, telegram, f"127.0.0.1:{discord.port}")
        async with ipbot_running(env, tmp_path) as process:
            await telegram.next_call("setMyCommands", timeout=120)
            await discord.wait_until_ready()
            answered = [await telegram_answers(telegram), await discord_answers(discord)]
            code = await stopped_by_sigterm(process)
    await discord.stop()
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
    assert answered == [True, True], log[-2000:]
    assert code == 0, log[-2000:]


async def test_telegram_answers_while_discord_is_unreachable_and_discord_joins_later(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet: Discord is unreachable at start
    discord = FakeDiscord()
    async with FakeTelegram() as telegram:
        env = both_platforms(data_dir, telegram, f"127.0.0.1:{port}")
        async with ipbot_running(env, tmp_path) as process:
            await telegram.next_call("setMyCommands", timeout=120)
            telegram_first = await telegram_answers(telegram)
            await discord.start(port)
            await discord.wait_until_ready(timeout=40)
            answered = [telegram_first, await discord_answers(discord)]
            code = await stopped_by_sigterm(process)
    await discord.stop()
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
    assert answered == [True, True], log[-3000:]
    assert "Discord: stopped working" in log and "restarting in" in log, log[-3000:]
    assert code == 0, log[-3000:]


async def test_a_malformed_gateway_event_restarts_discord_and_telegram_keeps_answering(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    discord = FakeDiscord()
    await discord.start()
    async with FakeTelegram() as telegram:
        env = both_platforms(data_dir, telegram, f"127.0.0.1:{discord.port}")
        async with ipbot_running(env, tmp_path) as process:
            await telegram.next_call("setMyCommands", timeout=120)
            await discord.wait_until_ready()
            await discord.malformed_event()
            telegram_meanwhile = await telegram_answers(telegram)
            await discord.wait_until(lambda: discord.identifies == 2, timeout=30)
            answered = [telegram_meanwhile, await discord_answers(discord)]
            code = await stopped_by_sigterm(process)
    await discord.stop()
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
    assert answered == [True, True], log[-3000:]
    assert code == 0, log[-3000:]


async def test_a_token_revoked_while_polling_ends_ipbot_with_one_clear_line(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    async with FakeTelegram() as telegram:
        env = ipbot_env(
            data_dir,
            IPBOT_TELEGRAM_TOKEN=telegram.token,
            IPBOT_TELEGRAM_API_URL=telegram.base_url,
        )
        async with ipbot_running(env, tmp_path) as process:
            await telegram.next_call("setMyCommands", timeout=120)
            telegram.fail_next("getUpdates", 401, "Unauthorized", echo_url=True)
            telegram.private_message(QUESTION)  # ends the pending long poll: the next one fails
            code = await asyncio.wait_for(process.wait(), timeout=30)
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("ipbot: error:")]
    assert code != 0, "a bot that can no longer poll must not look healthy to systemd"
    assert errors == ["ipbot: error: Telegram rejected IPBOT_TELEGRAM_TOKEN; check the token"]
    assert telegram.token.split(":")[1] not in log


def run_at_a_terminal(
    data_dir: Path, folder: Path, typed: bytes, timeout: float
) -> tuple[int, str, str]:
    """`ipbot run` with no token, on a terminal that receives `typed`: (exit code, out, err)."""
    terminal, stdin = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ipbot_env(data_dir),
            cwd=folder,
        )
        os.write(terminal, typed)
        out, err = process.communicate(timeout=timeout)
    finally:
        os.close(terminal)
        os.close(stdin)
    return process.returncode, out, err


def test_run_without_tokens_on_a_terminal_starts_the_console_chat(
    data_dir: Path, retriever: Retriever, tmp_path: Path
) -> None:
    code, out, err = run_at_a_terminal(
        data_dir, tmp_path, b"what is a consortium agreement?\n/quit\n", 120
    )
    assert code == 0, err
    assert "No chat token is set" in err
    assert "Source:" in out and "consortium" in out.lower()


def test_the_console_of_run_reloads_the_corpus(data_dir: Path, tmp_path: Path) -> None:
    """`make run` with no token starts the console chat without the refresh worker: /reload
    waited forever, and the request was carried out by whichever bot started next."""
    code, out, err = run_at_a_terminal(data_dir, tmp_path, b"/reload\n/quit\n", 180)
    assert code == 0, err
    assert "The corpus has not changed" in out, out
    assert out.index("Checking the corpus files") < out.index("The corpus has not changed")


def test_run_without_a_terminal_or_a_token_names_the_missing_tokens(
    data_dir: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=ipbot_env(data_dir, IPBOT_TELEGRAM_TOKEN="  ", IPBOT_DISCORD_TOKEN=""),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0, "under a supervisor this would look like a clean exit"
    assert "IPBOT_TELEGRAM_TOKEN" in result.stderr and "IPBOT_DISCORD_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_discord_error_that_echoes_the_token_is_logged_redacted(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    discord = FakeDiscord(echoing_failures=1)
    await discord.start()
    async with FakeTelegram() as telegram:
        env = both_platforms(data_dir, telegram, f"127.0.0.1:{discord.port}")
        async with ipbot_running(env, tmp_path) as process:
            await discord.wait_until_ready(timeout=120)  # after one refused, restarted start
            code = await stopped_by_sigterm(process)
    await discord.stop()
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
    token = "fake-discord-token"
    assert "Bad request from" in log and "<redacted>" in log, log[-3000:]
    assert token not in log and "".join(f"&#{ord(c)};" for c in token) not in log
    assert code == 0, log[-3000:]


async def test_a_second_run_on_the_same_sqlite_file_refuses_to_start(
    retriever: Retriever, data_dir: Path, tmp_path: Path
) -> None:
    async with FakeTelegram() as telegram:
        env = ipbot_env(
            data_dir, IPBOT_TELEGRAM_TOKEN=telegram.token, IPBOT_TELEGRAM_API_URL=telegram.base_url
        )
        first, second = tmp_path / "first", tmp_path / "second"
        first.mkdir()
        second.mkdir()
        async with ipbot_running(env, first) as running:
            await telegram.next_call("setMyCommands", timeout=120)
            async with ipbot_running(env, second) as refused:
                code = await asyncio.wait_for(refused.wait(), timeout=60)
            assert running.returncode is None  # the first one keeps serving
            assert await stopped_by_sigterm(running) == 0
    log = (second / "ipbot.log").read_text(errors="replace")
    assert code == 2, log[-2000:]
    assert "another `ipbot run` is already using" in log and "PostgreSQL" in log, log[-2000:]


@pytest.mark.parametrize(
    ("variables", "level"), [({}, logging.WARNING), ({"IPBOT_LOG_LEVEL": "INFO"}, logging.INFO)]
)
def test_the_console_chat_is_not_interleaved_with_info_lines(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], level: int
) -> None:
    """`make run` with no token: an INFO line per question sat between the answers."""
    from bot.runner import quiet_for_the_console
    from bot.settings import load_settings

    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)  # what `ipbot run` configures by default
    try:
        quiet_for_the_console(load_settings(_env_file=None))
        assert root.level == level
    finally:
        root.setLevel(before)
