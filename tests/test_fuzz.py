"""Hostile messages through both adapters: every reply is one the platform accepts, and the
answer of the colleague asking at the same moment is the answer they get when alone."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from telegram.ext import Application

from bot.assistant import Assistant
from bot.discord import SORRY as DISCORD_SORRY
from bot.settings import Settings
from bot.telegram import SORRY as TELEGRAM_SORRY
from bot.telegram import build_application, polling
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram
from tests.test_discord import assert_sendable, start_bot, stop_bot

pytestmark = pytest.mark.slow

QUESTION = "Who owns the results of a joint research project?"
FRAGMENTS = [
    "<b>", "</i>", "<a href='javascript:x'>", "&amp;", "&#58;", "&lt;", "<script>", "</blockquote>",
    "**", "__", "`", "```", "||", "~~", "> ", "# ", "[x](https://example.org)",
    "@everyone", "@here", "<@1>", "<@&2>", "<#3>", "<t:0>", "@ipbot_test_bot",
    "\x00", "\x07", "\x1b[31m", "\r", "\n", "\t", "\u0085", "\u2028", "\u200b", "\u202e", "\ufeff",
    "\ud800", "\udfff", "\U0001f9ea", "\u0301", "ﷺ", "𒐫",
    "/ask ", "/area ", "/areas", "/more", "/start@ipbot_test_bot",
    "patent", "joint ownership", "licence",
]  # fmt: skip
pieces = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=12)
hostile = st.one_of(
    pieces.map("".join),
    st.tuples(pieces.map("".join), st.integers(50, 400)).map(lambda pair: pair[0] * pair[1]),
)
FUZZ = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
users = itertools.count(5000)


@pytest_asyncio.fixture(loop_scope="function")
async def telegram(assistant: Assistant) -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        config = Settings(
            telegram_token=server.token,
            telegram_api_url=server.base_url,
            _env_file=None,  # type: ignore[call-arg]
        )
        application: Application = build_application(assistant, config)
        async with polling(application):
            yield server


@pytest.mark.asyncio(loop_scope="function")
@FUZZ
@given(message=hostile)
async def test_hostile_telegram_messages_get_valid_replies_and_spoil_no_other_answer(
    telegram: FakeTelegram, message: str
) -> None:
    assume(message.strip())
    attacker, colleague = next(users), next(users)
    telegram.private_message(message, attacker)
    telegram.private_message(QUESTION, colleague)
    answer = await telegram.replies_in(colleague)
    replies = await telegram.replies_in(attacker)

    assert all(c.ok for c in replies), [c.error for c in replies]
    assert all(c.text != TELEGRAM_SORRY for c in replies)
    assert len(answer) == 1 and answer[0].ok
    assert answer[0].text == telegram_reference.setdefault("answer", answer[0].text)


telegram_reference: dict[str, str] = {}
discord_reference: dict[str, str] = {}


@pytest_asyncio.fixture(loop_scope="session")
async def discord(assistant: Assistant) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    stop, task = await start_bot(server, assistant)
    yield server
    await stop_bot(server, stop, task)  # every message sent passes assert_sendable


async def reply_to(discord: FakeDiscord, mark: int, message: dict) -> dict:
    """The bot's reply to a message: in the thread started on it, or as a reply."""

    def found() -> dict | None:
        for call in discord.calls_since(mark, "POST", r"/channels/\d+/messages"):
            in_thread = call.path == f"/channels/{message['id']}/messages"
            reference = (call.body.get("message_reference") or {}).get("message_id")
            if in_thread or str(reference) == message["id"]:
                return call.body
        return None

    return await discord.wait_until(found)


@pytest.mark.asyncio(loop_scope="session")
@FUZZ
@given(message=hostile)
async def test_hostile_discord_mentions_get_valid_replies_and_spoil_no_other_answer(
    discord: FakeDiscord, message: str
) -> None:
    colleague = discord.user(f"colleague{next(users)}")
    mark = len(discord.calls)
    asked = await discord.post_message(message, mention=True, author=discord.user("attacker"))
    control = await discord.post_message(QUESTION, dm=True, author=colleague)
    answer = await reply_to(discord, mark, control)
    reply = await reply_to(discord, mark, asked)
    await asyncio.sleep(0)

    assert_sendable(reply) and assert_sendable(answer)  # type: ignore[func-returns-value]
    refused = [c for c in discord.calls_since(mark) if c.response is None and c.method == "POST"]
    assert not [c for c in refused if "/typing" not in c.path], "Discord refused a request"
    assert reply.get("content") != DISCORD_SORRY
    description = answer["embeds"][0]["description"]
    assert description == discord_reference.setdefault("answer", description)
