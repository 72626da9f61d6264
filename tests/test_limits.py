"""Per-user limits: a flood costs one notice, paging counts, and memory stays bounded.

Votes are counted once per person per answer by the store (tests/test_store.py).
"""

from __future__ import annotations

import pytest

from bot.assistant import Assistant, RateLimiter
from bot.replies import AnswerReply, Notice, Quiet, User

QUESTION = "Who owns the results of a joint research project?"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_over_the_limit_a_user_is_told_once_per_window_then_ignored() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock=clock)
    first_window = [limiter.check("telegram:1") for _ in range(6)]
    clock.now += 61
    second_window = [limiter.check("telegram:1") for _ in range(4)]

    assert first_window == ["allow", "allow", "notify", "drop", "drop", "drop"]
    assert second_window == ["allow", "allow", "notify", "drop"]


def test_idle_users_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock=clock)
    for user in range(20_000):
        limiter.check(f"telegram:{user}")
    clock.now += 61
    limiter.check("telegram:new")

    assert len(limiter) == 1, "every user ever seen was kept"


def test_a_crowd_in_one_window_is_capped() -> None:
    limiter = RateLimiter(10, clock=Clock(), max_users=1000)
    for user in range(5000):
        limiter.check(f"discord:{user}")

    assert len(limiter) == 1000


async def test_paging_counts_as_a_question(assistant: Assistant) -> None:
    assistant.rate_limiter = RateLimiter(2, clock=Clock())
    user = User("console", "local")
    replies = [await assistant.ask(user, QUESTION, offset=offset) for offset in (0, 3, 6, 9)]

    assert [type(r).__name__ for r in replies] == ["AnswerReply", "AnswerReply", "Notice", "Quiet"]
    assert isinstance(replies[2], Notice) and replies[2].kind == "rate_limited"
    assert isinstance(replies[3], Quiet)


async def test_no_typing_for_a_question_over_the_limit(assistant: Assistant) -> None:
    assistant.rate_limiter = RateLimiter(1, clock=Clock())
    shown: list[int] = []

    async def typing() -> None:
        shown.append(1)

    for _ in range(5):
        await assistant.ask(User("discord", "7"), QUESTION, working=typing)

    assert shown == [1]


@pytest.mark.parametrize("line", ["/area \ud800", "/more\ud800", "/subscribe \udfff x", "\ud800"])
async def test_replies_never_echo_text_that_cannot_be_sent(assistant: Assistant, line: str) -> None:
    """A lone surrogate in a command would make the echoed reply impossible to encode."""
    reply = await assistant.handle_text(User("telegram", "42"), line)
    text = getattr(reply, "text", "")
    text.encode("utf-8")  # raises on a lone surrogate
    assert "\ud800" not in text and "\udfff" not in text


async def test_sources_count_as_a_question_and_a_page_past_the_end_says_so(
    assistant: Assistant,
) -> None:
    """A Sources press searches again, as More does; an old or forged button for a page past
    the last one said nothing (Sources) or showed an answer with no passages (More)."""
    user = User("telegram", "9")
    asked = await assistant.ask(user, "what is a consortium agreement?")
    assert isinstance(asked, AnswerReply) and asked.question_id is not None

    for page in (assistant.more(user, asked.question_id, 9999),
                 assistant.sources(user, asked.question_id, 9999)):  # fmt: skip
        reply = await page
        assert isinstance(reply, Notice) and "nothing more" in reply.text
    assistant.rate_limiter.limit = 3  # three searches so far
    limited = await assistant.sources(user, asked.question_id)
    assert isinstance(limited, Notice) and limited.kind == "rate_limited"
