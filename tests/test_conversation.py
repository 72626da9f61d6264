"""Follow-ups: a short continuation is read with the same chat's previous question, for a while."""

from __future__ import annotations

import pytest

from bot.assistant import AnswerReply, Assistant, User
from bot.console import ConsoleChat
from bot.conversation import Conversations, chat_key, is_follow_up


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "text",
    ["and what about for software?", "what if the partner is in the US?", "How about data?"],
)
def test_continuations_are_follow_ups(text: str) -> None:
    assert is_follow_up(text)


@pytest.mark.parametrize(
    "text",
    [
        "who owns the results of a joint project?",
        "and if a company pays for the whole project and wants every result, including the "
        "software and the data, who owns them and can we still publish?",
    ],
)
def test_standalone_questions_are_not_follow_ups(text: str) -> None:
    assert not is_follow_up(text)


def test_follow_up_is_combined_with_the_previous_question_of_the_same_chat_only() -> None:
    conversations = Conversations()
    conversations.understand("telegram:1", "who owns the results of a joint project?")
    same_chat = conversations.understand("telegram:1", "and for software?")
    other_chat = conversations.understand("telegram:2", "and for software?")
    assert same_chat.text == "who owns the results of a joint project? and for software?"
    assert same_chat.note and "who owns the results" in same_chat.note
    assert other_chat.text == "and for software?" and other_chat.note is None


def test_previous_question_expires_after_a_few_minutes() -> None:
    clock = Clock()
    conversations = Conversations(ttl=300, clock=clock)
    conversations.understand("c", "who owns the results of a joint project?")
    clock.now = 301
    assert conversations.understand("c", "and for software?").note is None


def test_memory_is_bounded_to_the_most_recent_chats() -> None:
    conversations = Conversations(capacity=2)
    for chat in ("a", "b", "c"):
        conversations.understand(chat, f"question in chat {chat} about patents")
    assert len(conversations) == 2
    assert conversations.understand("a", "and for software?").note is None


async def test_assistant_answers_a_follow_up_and_says_how_it_understood_it(
    assistant: Assistant,
) -> None:
    user, key = User("telegram", "7"), chat_key("telegram", 42, "7")
    await assistant.ask(user, "who owns the results of a joint research project?", conversation=key)
    reply = await assistant.ask(user, "what if the partner is in the US?", conversation=key)
    assert isinstance(reply, AnswerReply) and reply.answer.answered
    assert any("previous question" in note for note in reply.answer.notes)
    assert "joint research project" in reply.answer.question


async def test_console_follow_up_shows_how_it_was_read(assistant: Assistant) -> None:
    chat = ConsoleChat(assistant)
    await chat.send("which open source licence should I use for research code?")
    reply = await chat.send("and what about for hardware?")
    assert "I read this together with your previous question" in reply
