"""Follow-ups: a short continuation is read with the same chat's previous question, for a while."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from bot.assistant import AnswerReply, Assistant, User
from bot.console import ConsoleChat
from bot.conversation import (
    Conversations,
    as_asked,
    chat_key,
    is_follow_up,
    small_talk,
    unmentioned,
)
from bot.replies import Notice


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "text",
    [
        "and what about for software?",
        "what if the partner is in the US?",
        "How about data?",
        "does that apply to students too?",
        "how does that relate to licensing?",
        "anything specific for phd students?",
        "and for a spin-off as well?",
    ],
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


@pytest.mark.parametrize(
    "text",
    [
        "und bei Software?",
        "Et si le partenaire est aux États-Unis ?",
        "Qu’en est-il du logiciel ?",
        "¿Y si es software?",
        "E se il partner è in Cina?",
        "A co z oprogramowaniem?",
        "En als het om software gaat?",
        "Och om det gäller mjukvara?",
        "A když jde o software?",
        "Και για λογισμικό;",
        "А якщо партнер у США?",
        "És ha szoftverről van szó?",
    ],
)
def test_continuations_in_other_languages_are_follow_ups(text: str) -> None:
    assert is_follow_up(text)


def _questions(data: dict) -> list[str]:
    languages = data.get("languages") or []
    return [
        text
        for item in data["questions"]
        for text in ([item["q"]] if "q" in item else [item.get(code) for code in languages])
        if text
    ]


def test_no_standalone_eval_question_in_any_language_opens_like_a_follow_up() -> None:
    """Words that open a continuation in one language must not open a question in another:
    Spanish "si" (if), Slovenian "ali" (a yes/no question), English "a" and "I"."""
    files = sorted((Path(__file__).parent / "data").glob("*.yaml"))
    files = [f for f in files if not f.stem.endswith("highlights")]  # the same questions
    questions = [q for f in files for q in _questions(yaml.safe_load(f.read_text("utf-8")))]
    assert len(questions) > 3000
    assert [q for q in questions if is_follow_up(q)] == []


def test_follow_up_is_combined_with_the_previous_question_of_the_same_chat_only() -> None:
    conversations = Conversations()
    conversations.understand("telegram:1", "who owns the results of a joint project?")
    same_chat = conversations.understand("telegram:1", "and for software?")
    other_chat = conversations.understand("telegram:2", "and for software?")
    assert same_chat.text == (
        "who owns the results of a joint project? and for software? and for software?"
    )  # the detail twice for the search, once for the people who read it:
    assert as_asked(same_chat.text) == "who owns the results of a joint project? and for software?"
    note = same_chat.note()
    assert note and "who owns the results" in note
    assert other_chat.text == "and for software?" and other_chat.note() is None


def test_a_long_previous_question_is_not_quoted_back_whole() -> None:
    """A follow-up after a pasted page quoted all of it: 4,000 characters before the answer."""
    conversations = Conversations()
    conversations.understand("c", "who owns the results of a joint project? " + "details " * 250)
    note = conversations.understand("c", "and for software?").note()
    assert note is not None and len(note) < 300 and note.endswith('…"')


def test_previous_question_expires_after_a_few_minutes() -> None:
    clock = Clock()
    conversations = Conversations(ttl=300, clock=clock)
    conversations.understand("c", "who owns the results of a joint project?")
    clock.now = 301
    assert conversations.understand("c", "and for software?").note() is None


def test_memory_is_bounded_to_the_most_recent_chats() -> None:
    conversations = Conversations(capacity=2)
    for chat in ("a", "b", "c"):
        conversations.understand(chat, f"question in chat {chat} about patents")
    assert len(conversations) == 2
    assert conversations.understand("a", "and for software?").note() is None


async def test_assistant_answers_a_follow_up_and_says_how_it_understood_it(
    assistant: Assistant,
) -> None:
    user, key = User("telegram", "7"), chat_key("telegram", 42, "7")
    await assistant.ask(user, "who owns the results of a joint research project?", conversation=key)
    reply = await assistant.ask(user, "what if the partner is in the US?", conversation=key)
    assert isinstance(reply, AnswerReply) and reply.answer.answered
    assert any("previous question" in note for note in reply.answer.notes)
    assert "joint research project" in reply.answer.question
    assert reply.answer.question.count("partner is in the US") == 1


@pytest.mark.parametrize(
    ("previous", "follow_up", "wanted", "within"),
    [
        (
            "What should a consortium agreement say about IP in a Horizon Europe project?",
            "what if the partner is in China?",
            {"INT-R1", "INT-R2", "INT-R7", "INT-R8", "INT-E4"},
            3,
        ),
        (
            "How do we protect results in cooperation with partners outside the EU?",
            "what about standards?",
            {"NT-R9", "NT-E11"},
            3,
        ),
        (
            "What is a material transfer agreement?",
            "and a confidentiality agreement?",
            {"JIA-D6"},
            1,
        ),
        (
            "What training on IP should PhD students get?",
            "and for technology transfer staff?",
            {"SK-R3", "SK-D2", "SK-E2"},
            1,
        ),
    ],
)
async def test_a_follow_ups_detail_is_not_outweighed_by_the_previous_question(
    assistant: Assistant, previous: str, follow_up: str, wanted: set[str], within: int
) -> None:
    """Read once after a longer question, the detail lost: the previous answer came again."""
    user, key = User("telegram", "9"), chat_key("telegram", 44, "9")
    await assistant.ask(user, previous, conversation=key)
    reply = await assistant.ask(user, follow_up, conversation=key)
    assert isinstance(reply, AnswerReply) and reply.answer.answered
    assert wanted & {hit.passage.id for hit in reply.answer.hits[:within]}, reply.answer.hits


async def test_a_follow_ups_detail_that_no_passage_mentions_is_named(assistant: Assistant) -> None:
    """With nothing on Japan, the passages answer the previous question in general: the reader
    was not told, and took them for an answer about Japan."""
    user, key = User("telegram", "10"), chat_key("telegram", 45, "10")
    await assistant.ask(user, "What should a consortium agreement say about IP?", conversation=key)
    japan = await assistant.ask(user, "what if the partner is in Japan?", conversation=key)
    assert isinstance(japan, AnswerReply) and japan.answer.answered
    assert any("None of these passages mentions “Japan”" in note for note in japan.answer.notes)

    await assistant.ask(user, "What is a material transfer agreement?", conversation=key)
    covered = await assistant.ask(user, "and a confidentiality agreement?", conversation=key)
    assert isinstance(covered, AnswerReply) and covered.answer.answered
    assert not any("None of these passages" in note for note in covered.answer.notes)


def test_unmentioned_words_are_stemmed_and_acronyms_kept_as_written() -> None:
    texts = ["Licences granted to US companies", "us and them"]
    assert unmentioned("and licensing in the US or the UK?", texts) == ["UK"]


async def test_console_follow_up_shows_how_it_was_read(assistant: Assistant) -> None:
    chat = ConsoleChat(assistant)
    await chat.send("which open source licence should I use for research code?")
    reply = await chat.send("and what about for hardware?")
    assert "I read this together with your previous question" in reply


async def test_a_follow_up_in_another_language_is_understood_and_says_so_in_it(
    assistant: Assistant,
) -> None:
    user, key = User("telegram", "8", language="de"), chat_key("telegram", 43, "8")
    first = "Wem gehören die Ergebnisse, wenn wir mit einer Firma zusammen forschen?"
    await assistant.ask(user, first, conversation=key)
    reply = await assistant.ask(user, "und bei Software?", conversation=key)
    assert isinstance(reply, AnswerReply) and reply.answer.answered
    assert reply.answer.question.startswith(first.rstrip("?"))
    assert f'Zusammen mit Ihrer vorigen Frage gelesen: "{first}"' in reply.answer.notes


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("thanks!", "thanks"),
        ("Thank you so much, very useful", "thanks"),
        ("ok, got it", "thanks"),
        ("Danke schön", "thanks"),
        ("Hello there", "greeting"),
        ("hola", "greeting"),
        ("hi, who owns a patent?", None),
        ("great, I'll forward this to Maria", None),
        ("help", None),
        ("MTA", None),
        ("👍", "thanks"),
        ("🙏🙏", "thanks"),
        ("+1", "thanks"),
        ("lol", "thanks"),
        ("?", None),
        ("👍 who owns a patent?", None),
    ],
)
def test_thanks_and_greetings_are_told_apart_from_questions(text: str, kind: str | None) -> None:
    assert small_talk(text) == kind


async def test_thanks_get_a_reply_and_are_not_kept_as_a_gap(assistant: Assistant) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    user = User("telegram", "9")
    thanks = await assistant.ask(user, "thanks, very helpful!")
    hello = await assistant.ask(user, "hello")
    assert isinstance(thanks, Notice) and "welcome" in thanks.text
    assert isinstance(hello, Notice) and "/help" in hello.text
    assert await assistant.store.questions_since(since) == []


async def test_a_declined_question_is_no_topic_to_continue(assistant: Assistant) -> None:
    user, key = User("telegram", "10"), chat_key("telegram", 44, "10")
    await assistant.ask(user, "how do I write a cover letter for a postdoc?", conversation=key)
    reply = await assistant.ask(user, "and what about patents on software?", conversation=key)
    assert isinstance(reply, AnswerReply)
    assert not any("previous question" in note for note in reply.answer.notes)
