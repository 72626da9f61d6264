"""Telegram webhook mode: updates POSTed to ipbot's own HTTP port, answered through the real
python-telegram-bot Application, and nothing from anyone who lacks the secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bot.app import App
from bot.assistant import Assistant
from bot.http import Front, http_front
from bot.settings import Settings
from bot.store import Store
from bot.telegram import ALLOWED_UPDATES, SECRET_HEADER, run_telegram
from retrieval.search import Retriever
from tests.fakes.telegram_server import USER_ID, FakeTelegram
from tests.test_runner import free_port

pytestmark = pytest.mark.slow
QUESTION = "Who owns the results of a joint research project?"
SECRET = "webhook-secret-only-telegram-knows"
PUBLIC_URL = "https://ipbot.example.org/telegram/ipbot"


async def post(front: Front, update: dict[str, Any], secret: str | None) -> int:
    """POST an update as Telegram does, to the route the webhook URL names, on our port."""
    settings = front.app.settings
    url = f"http://127.0.0.1:{settings.http_port}{settings.telegram_webhook_path}"
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=update, headers=headers) as response,
    ):
        return response.status


@pytest_asyncio.fixture(loop_scope="function")
async def webhook_bot(
    retriever: Retriever, store: Store, assistant: Assistant, tmp_path: Path
) -> AsyncIterator[tuple[FakeTelegram, Front]]:
    """`ipbot run`'s HTTP server with the Telegram adapter receiving through it."""
    async with FakeTelegram() as telegram:
        settings = Settings(
            telegram_token=telegram.token,
            telegram_api_url=telegram.base_url,
            telegram_webhook_url=PUBLIC_URL,
            telegram_webhook_secret=SECRET,
            http_port=free_port(),
            data_dir=tmp_path,
            _env_file=None,
        )
        async with http_front(App(settings, store, retriever, assistant)) as front:
            assert front is not None and front.telegram is not None
            stop = asyncio.Event()
            task = asyncio.create_task(run_telegram(assistant, settings, stop, front.telegram))
            try:
                await telegram.next_call("setWebhook")
                while front.telegram.receiver is None:  # attached once the Application runs
                    await asyncio.sleep(0.05)
                yield telegram, front
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)


async def test_start_registers_the_webhook_with_its_secret_and_keeps_pending_updates(
    webhook_bot,
) -> None:
    telegram, _ = webhook_bot
    [registered] = telegram.calls_of("setWebhook")
    assert registered.params["url"] == PUBLIC_URL
    assert registered.params["secret_token"] == SECRET
    assert registered.params["allowed_updates"] == ALLOWED_UPDATES
    assert registered.params.get("drop_pending_updates", False) is False
    assert not telegram.calls_of("getUpdates"), "webhook mode must not poll"


async def test_an_update_posted_with_the_secret_is_answered(webhook_bot) -> None:
    telegram, front = webhook_bot
    status = await post(front, telegram.private_update(QUESTION), SECRET)
    [answer] = await telegram.replies_in(USER_ID)
    assert status == 200
    assert "<a href=" in answer.text, "the answer cites its sources"


@pytest.mark.parametrize("secret", [None, "", "not-the-secret-at-all-0123456789"])
async def test_an_update_without_the_right_secret_gets_403_and_no_answer(
    webhook_bot, secret: str | None
) -> None:
    telegram, front = webhook_bot
    status = await post(front, telegram.private_update(QUESTION), secret)
    await asyncio.sleep(2)  # time enough for an answer, were one coming
    assert status == 403
    assert not telegram.calls_of("sendMessage") and not telegram.calls_of("sendChatAction")


@pytest.fixture
def checks_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter asks Telegram about its webhook every 0.2 s instead of every minute."""
    monkeypatch.setattr("bot.telegram.WEBHOOK_CHECK_SECONDS", 0.2)


async def test_a_webhook_removed_elsewhere_is_set_again(checks_often, webhook_bot) -> None:
    telegram, _ = webhook_bot
    telegram.webhook = {}  # someone called deleteWebhook with the bot's token
    again = await telegram.next_call("setWebhook", timeout=10)
    assert again.params["url"] == PUBLIC_URL
    assert again.params["secret_token"] == SECRET
