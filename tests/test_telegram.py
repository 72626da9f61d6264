"""The Telegram adapter end to end: the real python-telegram-bot Application against a fake Bot API."""

from __future__ import annotations

import asyncio
import html
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from telegram.ext import Application

from bot.assistant import Assistant
from bot.commands import public_commands
from bot.replies import DISCLAIMER, NOT_ABOUT_IP, NOT_COVERED
from bot.settings import Settings, SettingsError
from bot.store import Store
from bot.telegram import SORRY, build_application, polling, run_telegram
from retrieval.search import Retriever
from tests.conftest import ipbot_env, ipbot_running, long_digest
from tests.fakes.telegram_rules import parse_html, utf16_length
from tests.fakes.telegram_server import BOT_USER, GROUP, USER_ID, Call, FakeTelegram, url_echoes

pytestmark = pytest.mark.slow

QUESTION = "Who owns the results of a joint research project?"
# no internal kind tag in answers; a passage from another area than the answer's names it
PASSAGE_HEADING = re.compile(r"<b>(\d+)\. [^<]+</b>(?: — [^<\n]+)?\n")
CITATION_LINK = re.compile(r'<a href="https?://[^"]+">[^<]+</a>')
MENTION = f"@{BOT_USER['username']}"
OTHER_GROUP = {"id": -1002003004006, "type": "supergroup", "title": "Tech transfer office"}
CHANNELS = [{"id": -1001000000000 - n, "type": "channel", "title": f"Lab {n}"} for n in (1, 2)]


@pytest_asyncio.fixture(loop_scope="function")
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@asynccontextmanager
async def running_bot(telegram: FakeTelegram, assistant: Assistant) -> AsyncIterator[Application]:
    settings = Settings(
        telegram_token=telegram.token, telegram_api_url=telegram.base_url, _env_file=None
    )
    async with polling(build_application(assistant, settings)) as application:
        yield application


@pytest_asyncio.fixture(loop_scope="function")
async def bot(telegram: FakeTelegram, assistant: Assistant) -> AsyncIterator[Application]:
    async with running_bot(telegram, assistant) as application:
        yield application


async def ask_privately(telegram: FakeTelegram, text: str, user_id: int = USER_ID) -> Call:
    telegram.private_message(text, user_id)
    return await telegram.next_call("sendMessage")


async def replies_until_buttons(telegram: FakeTelegram) -> list[Call]:
    """The messages of one reply: Telegram pieces of it, the last one carrying the buttons."""
    calls = [await telegram.next_call("sendMessage")]
    while not calls[-1].buttons:
        calls.append(await telegram.next_call("sendMessage"))
    return calls


async def test_follow_up_in_the_same_chat_is_read_with_the_previous_question(
    telegram: FakeTelegram, bot
) -> None:
    await ask_privately(telegram, QUESTION)
    reply = await ask_privately(telegram, "what if the partner is in the US?")
    assert "I read this together with your previous question" in reply.text


async def test_in_a_group_a_follow_up_is_read_with_its_authors_question_in_its_topic(
    telegram: FakeTelegram, bot
) -> None:
    """Another member's "and what about software?", or one typed in another forum topic, is
    not read with someone else's question; the answer stays in the topic it was asked in."""
    mention = f"@{BOT_USER['username']}"
    telegram.group_message(f"{mention} {QUESTION}", topic=10)
    first = await telegram.next_call("sendMessage")
    telegram.group_message(f"{mention} and what about software?", user_id=2002, topic=20)
    other = await telegram.next_call("sendMessage")
    telegram.group_message(f"{mention} and what about software?", topic=20)
    elsewhere = await telegram.next_call("sendMessage")
    telegram.group_message(f"{mention} and what about software?", topic=10)
    same = await telegram.next_call("sendMessage")

    assert [c.params.get("message_thread_id") for c in (first, other, elsewhere, same)] == [
        10, 20, 20, 10,
    ]  # fmt: skip
    assert "previous question" not in other.text and "previous question" not in elsewhere.text
    assert "I read this together with your previous question" in same.text


async def test_a_reply_to_an_earlier_answer_continues_that_answers_question(
    telegram: FakeTelegram, bot
) -> None:
    first = await ask_privately(telegram, QUESTION)
    await ask_privately(telegram, "How do we value a patent before licensing it?")
    telegram.private_message("and what about software?", reply_to=first.result)
    reply = await telegram.next_call("sendMessage")

    assert "previous question" in reply.text and "joint research project" in reply.text


async def test_in_a_group_a_reply_to_the_bots_answer_continues_its_question(
    telegram: FakeTelegram, bot
) -> None:
    telegram.group_message(f"@{BOT_USER['username']} {QUESTION}")
    answer = (await replies_until_buttons(telegram))[-1]
    telegram.group_message("and what about software?", user_id=2002, reply_to=answer.result)
    reply = await telegram.next_call("sendMessage")

    assert "previous question" in reply.text and "joint research project" in reply.text


async def answered_only(telegram: FakeTelegram, question: dict, before: int) -> Call:
    """The bot's reply to `question`, once no other reply (to earlier messages) can follow."""
    reply = await telegram.next_call("sendMessage")
    await asyncio.sleep(1.0)  # time enough for the earlier messages to be (not) answered
    sent = telegram.calls_of("sendMessage")[before:]
    assert [c.params["reply_parameters"]["message_id"] for c in sent] == [question["message_id"]], (
        f"the bot answered people talking to each other: {[c.text[:80] for c in sent]}"
    )
    return reply


TO_CAROL = "see point 2: who owns the results of a joint research project is in the agreement"
CAROL = {"id": 3003, "is_bot": False, "first_name": "Carol"}  # a member without a username


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        (f"@carol_lab {TO_CAROL}", ()),
        (f"Carol {TO_CAROL}", ({"type": "text_mention", "offset": 0, "length": 5, "user": CAROL},)),
    ],
    ids=["mention", "text-mention"],
)
async def test_in_a_group_a_reply_to_an_answer_that_mentions_someone_else_is_left_alone(
    telegram: FakeTelegram, bot, text, entities
):
    """A member telling a colleague about the bot's answer got an answer from the bot."""
    telegram.group_message(f"{MENTION} {QUESTION}")
    answer = (await replies_until_buttons(telegram))[-1]
    before = len(telegram.calls_of("sendMessage"))
    telegram.group_message(text, 2002, reply_to=answer.result, entities=entities)
    question = telegram.group_message("and for software?", user_id=2002, reply_to=answer.result)

    assert PASSAGE_HEADING.search((await answered_only(telegram, question, before)).text)


async def test_small_talk_under_an_answer_gets_a_reply_in_private_only(telegram: FakeTelegram, bot):
    telegram.group_message(f"{MENTION} {QUESTION}")
    answer = (await replies_until_buttons(telegram))[-1]
    before = len(telegram.calls_of("sendMessage"))
    for chatter in ("thanks, very useful", "lol", "👍"):
        telegram.group_message(chatter, user_id=2002, reply_to=answer.result)
    question = telegram.group_message("and for software?", user_id=2002, reply_to=answer.result)
    await answered_only(telegram, question, before)
    private = await ask_privately(telegram, "thanks, very useful")

    assert html.escape("You're welcome") in private.text


async def test_in_a_group_a_reply_that_is_no_question_about_ip_gets_no_decline(
    telegram: FakeTelegram, bot
):
    """People talking under an answer were told "this does not look like [an IP question]"."""
    telegram.group_message(f"{MENTION} {QUESTION}")
    answer = (await replies_until_buttons(telegram))[-1]
    before = len(telegram.calls_of("sendMessage"))
    telegram.group_message("see you at lunch, the canteen closes at two", 2002, answer.result)
    question = telegram.group_message("and for software?", user_id=2002, reply_to=answer.result)

    await answered_only(telegram, question, before)


@pytest.mark.parametrize(
    ("senders", "chats"),
    [((GROUP, OTHER_GROUP), (GROUP, OTHER_GROUP)), (CHANNELS, (GROUP, GROUP))],
    ids=["anonymous-admins-of-two-groups", "two-channels-in-one-group"],
)
async def test_people_posting_as_a_chat_each_have_their_own_rate_limit(
    telegram: FakeTelegram, retriever: Retriever, store: Store, senders, chats
):
    """Telegram names one account as the sender for all of them: the first group's questions
    used up the budget of every anonymous administrator and channel everywhere."""
    async with running_bot(telegram, Assistant(retriever, store, rate_limit_per_minute=1)):
        replies = []
        for sender, chat in zip(senders, chats, strict=True):
            telegram.message_as_chat(f"{MENTION} {QUESTION}", sender, chat)
            replies.append(await telegram.next_call("sendMessage"))

    assert all(PASSAGE_HEADING.search(r.text) for r in replies), replies[1].text


async def test_what_a_button_sends_goes_to_the_topic_of_its_answer(telegram: FakeTelegram, bot):
    telegram.group_message(f"@{BOT_USER['username']} {QUESTION}", topic=77)
    answer = (await replies_until_buttons(telegram))[-1]
    for button in ("More ▸", "Sources"):
        telegram.press(answer.result, button)
        sent = await telegram.next_call("sendMessage")
        assert sent.params.get("message_thread_id") == 77, f"{button} went to the General topic"


@pytest.mark.parametrize("old", ["inaccessible", "topicless"])
async def test_a_button_under_an_old_answer_sends_to_the_topic_of_that_answer(
    telegram: FakeTelegram, bot, old
):
    """Under an old message Telegram sends a press without the message's topic."""
    telegram.group_message(f"{MENTION} {QUESTION}", topic=77)
    answer = (await replies_until_buttons(telegram))[-1]
    browse = next(t for t in answer.button_texts if t.startswith("Browse: "))
    for button in ("More ▸", "Sources", browse):
        telegram.press(answer.result, button, old=old)
        sent = await telegram.next_call("sendMessage")
        assert sent.result.get("message_thread_id") == 77, f"{button} went to the General topic"


async def test_a_photo_caption_that_mentions_the_bot_in_a_group_is_answered(
    telegram: FakeTelegram, bot
) -> None:
    telegram.group_photo(f"@{BOT_USER['username']} {QUESTION}")
    reply = await telegram.next_call("sendMessage")

    assert PASSAGE_HEADING.search(reply.text)


async def test_private_question_gets_a_cited_answer(telegram: FakeTelegram, bot, assistant):
    telegram.private_message(QUESTION)
    typing = await telegram.next_call("sendChatAction")
    reply = await telegram.next_call("sendMessage")

    assert typing.params["action"] == "typing" and typing.at <= reply.at
    assert reply.ok and reply.params["parse_mode"] == "HTML"
    areas = [html.escape(area.title) for area in assistant.retriever.corpus.areas]
    assert any(f"<b>Area:</b> {title}" in reply.text for title in areas), reply.text
    assert [int(n) for n in PASSAGE_HEADING.findall(reply.text)] == [1, 2, 3]
    assert len(CITATION_LINK.findall(reply.text)) == 3, "every passage links its citation"
    assert html.escape(DISCLAIMER) in reply.text
    assert reply.button_texts[:2] == ["More ▸", "Sources"]
    assert reply.button_texts[-2:] == ["👍 Helpful", "👎 Not helpful"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in reply.buttons)


async def test_help_and_the_command_menu_describe_the_bot(telegram: FakeTelegram, bot):
    menu = await telegram.next_call("setMyCommands")
    reply = await ask_privately(telegram, "/start")

    assert [c["command"] for c in menu.params["commands"]] == [c.name for c in public_commands()], (
        "the menu comes from the registry, without moderator commands"
    )
    assert "/ask QUESTION" in reply.text and "/areas" in reply.text
    assert "not legal advice" in reply.text and "Try: <i>" in reply.text


async def test_about_shows_corpus_version_and_index_date(telegram: FakeTelegram, bot, assistant):
    reply = await ask_privately(telegram, "/about")

    about = assistant.about()
    assert about.corpus_version in reply.text and str(about.indexed_at) in reply.text


async def test_group_chatter_is_ignored_and_a_mention_is_answered(telegram: FakeTelegram, bot):
    chatter = telegram.group_message("Anyone up for lunch? That joint ownership talk ran long.")
    telegram.group_message("Agreed, who owns the leftovers?", user_id=2002, reply_to=chatter)
    mention = telegram.group_message(f"@{BOT_USER['username']} {QUESTION}")
    reply = await telegram.next_call("sendMessage")
    await asyncio.sleep(0.3)  # time enough for the chatter to be (not) answered

    assert reply.params["reply_parameters"]["message_id"] == mention["message_id"]
    assert PASSAGE_HEADING.search(reply.text), "the mention should get an answer with passages"
    assert len(telegram.calls_of("sendMessage")) == 1, "group chatter must not be answered"
    assert len(telegram.calls_of("sendChatAction")) == 1


async def test_a_reply_to_the_bot_in_a_group_is_answered(telegram: FakeTelegram, bot):
    earlier = {"message_id": 9, "date": 0, "chat": GROUP, "from": BOT_USER, "text": "An answer"}
    question = telegram.group_message("And who pays for the patent applications?", reply_to=earlier)
    reply = await telegram.next_call("sendMessage")

    assert reply.params["reply_parameters"]["message_id"] == question["message_id"]
    assert CITATION_LINK.search(reply.text) or html.escape(NOT_COVERED) in reply.text


async def test_ask_alone_explains_usage_in_a_group(telegram: FakeTelegram, bot):
    telegram.group_message(f"/ask@{BOT_USER['username']}")
    reply = await telegram.next_call("sendMessage")

    assert "Type your question after /ask" in reply.text


async def test_an_unknown_command_addressed_to_the_bot_in_a_group_gets_a_hint(
    telegram: FakeTelegram, bot
):
    telegram.group_message("/foo@other_bot")  # another bot's command
    telegram.group_message("/foo")  # maybe another bot's: groups often have several
    addressed = telegram.group_message(f"/foo{MENTION}")
    reply = await telegram.next_call("sendMessage")
    await asyncio.sleep(0.5)  # time enough for the others to be (not) answered

    assert html.escape("I don't know /foo") in reply.text
    assert reply.params["reply_parameters"]["message_id"] == addressed["message_id"]
    assert len(telegram.calls_of("sendMessage")) == 1, "a command for another bot was answered"


async def test_areas_lists_the_nine_areas_with_counts(telegram: FakeTelegram, bot, assistant):
    reply = await ask_privately(telegram, "/areas")

    summaries = assistant.areas().areas
    assert len(summaries) == 9
    for summary in summaries:
        assert (
            f"<b>{html.escape(summary.area.title)}</b> ({summary.passages} passages)" in reply.text
        )
    assert len(reply.buttons) == 9


async def test_area_pages_by_button_in_place(telegram: FakeTelegram, bot, assistant):
    first = await ask_privately(telegram, "/area valuation")
    pages = assistant.browse("valuation").pages
    telegram.press(first.result, "Next ▸")
    edit = await telegram.next_call("editMessageText")

    assert pages > 1 and f"Page 1 of {pages}" in first.text
    assert edit.params["message_id"] == first.result["message_id"]
    assert f"Page 2 of {pages}" in edit.text and "◂ Previous" in edit.button_texts
    assert (await telegram.next_call("answerCallbackQuery")).ok


async def test_more_button_shows_the_next_passages(telegram: FakeTelegram, bot):
    answer = await ask_privately(telegram, QUESTION)
    telegram.press(answer.result, "More ▸")
    more = await telegram.next_call("sendMessage")

    assert [int(n) for n in PASSAGE_HEADING.findall(more.text)] == [4, 5, 6]


async def test_sources_button_shows_full_passages_folded(telegram: FakeTelegram, bot):
    answer = await ask_privately(telegram, QUESTION)
    telegram.press(answer.result, "Sources")
    sources = await telegram.next_call("sendMessage")

    assert sources.text.count("<blockquote expandable>") == 3
    assert len(CITATION_LINK.findall(sources.text)) == 3


@pytest.mark.parametrize(("label", "helpful"), [("👍 Helpful", True), ("👎 Not helpful", False)])
async def test_feedback_buttons_record_a_vote(
    telegram: FakeTelegram, bot, assistant, label, helpful
):
    answer = await ask_privately(telegram, QUESTION)
    telegram.press(answer.result, label)
    thanks = await telegram.next_call("answerCallbackQuery")
    edit = await telegram.next_call("editMessageReplyMarkup")

    assert "Thank you" in thanks.params["text"]
    assert await assistant.store.feedback_counts() == {helpful: 1}
    assert "👍 Helpful" not in edit.button_texts and "Sources" in edit.button_texts


async def test_in_a_group_every_member_can_vote_on_an_answer(
    telegram: FakeTelegram, bot, assistant
):
    """The first vote removed the vote buttons for the whole group."""
    telegram.group_message(f"@{BOT_USER['username']} {QUESTION}")
    answer = (await replies_until_buttons(telegram))[-1]
    telegram.press(answer.result, "👍 Helpful", user_id=2001)
    await telegram.next_call("answerCallbackQuery")
    telegram.press(answer.result, "👎 Not helpful", user_id=2002)  # the buttons are still there
    await telegram.next_call("answerCallbackQuery")

    assert await assistant.store.feedback_counts() == {True: 1, False: 1}
    assert not telegram.calls_of("editMessageReplyMarkup")


async def test_off_topic_question_is_declined_as_no_question_about_ip(telegram: FakeTelegram, bot):
    reply = await ask_privately(telegram, "What is the best pizza topping in Naples?")

    assert html.escape(NOT_ABOUT_IP) in reply.text and "Helpdesk" not in reply.text
    assert not PASSAGE_HEADING.search(reply.text), "an abstention must not show random passages"
    assert reply.button_texts == ["🔔 Tell me when this is covered"]  # nothing to browse


async def test_a_decline_that_offers_areas_lets_the_user_browse_them(
    telegram: FakeTelegram, bot
):
    reply = await ask_privately(telegram, "Was ist das beste Rezept für Pizza?")

    *browse, offer = reply.button_texts
    assert browse and all(t.startswith("Browse: ") for t in browse)
    assert offer == "🔔 Tell me when this is covered"
    telegram.press(reply.result, browse[0])
    page = await telegram.next_call("sendMessage")
    assert "Page 1 of" in page.text and html.escape(reply.button_texts[0][8:]) in page.text


async def test_inline_query_offers_cited_passages(telegram: FakeTelegram, bot):
    telegram.inline_query("joint ownership agreement")
    call = await telegram.next_call("answerInlineQuery")

    results = call.params["results"]
    assert call.ok and len(results) == 3 and call.params["next_offset"] == "3"
    for result in results:
        content = result["input_message_content"]
        assert result["type"] == "article" and result["title"]
        assert content["parse_mode"] == "HTML" and CITATION_LINK.search(content["message_text"])
        assert html.escape(DISCLAIMER) in content["message_text"]


async def test_inline_query_off_topic_is_not_covered(telegram: FakeTelegram, bot):
    telegram.inline_query("best pizza topping in Naples")
    call = await telegram.next_call("answerInlineQuery")

    [result] = call.params["results"]
    assert NOT_ABOUT_IP.startswith(result["title"].rstrip("…"))


async def test_typing_in_inline_mode_never_silences_a_chat_question(
    telegram: FakeTelegram, retriever: Retriever, store: Store
):
    """Telegram sends an inline query at each pause in typing: they used up the budget of
    chat questions, and the private question that followed got no reply at all."""
    words = QUESTION.split()
    async with running_bot(telegram, Assistant(retriever, store, rate_limit_per_minute=2)):
        for typed in range(2, len(words) + 1):
            telegram.inline_query(" ".join(words[:typed]))
        for _ in range(3):  # two answers and a notice; the rest are dropped
            await telegram.next_call("answerInlineQuery")
        reply = await ask_privately(telegram, QUESTION)

    assert PASSAGE_HEADING.search(reply.text)


async def test_an_inline_notice_is_never_shown_to_another_user(
    telegram: FakeTelegram, retriever: Retriever, store: Store
):
    async with running_bot(telegram, Assistant(retriever, store, rate_limit_per_minute=1)):
        await telegram.inline_results(telegram.inline_query("joint ownership", user_id=2001))
        mine = await telegram.inline_results(telegram.inline_query("licences", user_id=2001))
        theirs = await telegram.inline_results(telegram.inline_query("licences", user_id=2002))
    notice = telegram.calls_of("answerInlineQuery")[1].params

    assert [r["id"] for r in mine] == ["notice"]
    assert notice["is_personal"] is True and notice["cache_time"] == 0
    assert theirs[0]["id"] != "notice", "another user was shown someone else's 'slow down'"


async def test_inline_passages_are_kept_for_the_user_who_asked_only(telegram: FakeTelegram, bot):
    """The language passages are read in follows the user's: another user asks afresh."""
    for user_id in (2001, 2002, 2001):
        await telegram.inline_results(telegram.inline_query("joint ownership", user_id=user_id))

    assert len(telegram.calls_of("answerInlineQuery")) == 2, "2002 was shown 2001's results"


async def test_long_answers_are_split_into_valid_messages(
    telegram: FakeTelegram, retriever: Retriever, store: Store
):
    question = "How should a university license the results of joint research with industry? " * 70
    async with running_bot(
        telegram, Assistant(retriever, store, top_k=12, rate_limit_per_minute=100)
    ):
        telegram.private_message(question)
        answer = await replies_until_buttons(telegram)
        telegram.press(answer[-1].result, "Sources")
        sources = [await telegram.next_call("sendMessage")]
        while sum(c.text.count("<blockquote expandable>") for c in sources) < 12:
            sources.append(await telegram.next_call("sendMessage"))

    assert len(question) > 5000 and len(answer) >= 2 and len(sources) >= 2
    for call in answer + sources:
        assert call.ok, f"Telegram refused a piece: {call.error}"
        assert utf16_length(parse_html(call.text)) <= 4096
    assert "Your question was long" in answer[0].text
    assert [int(n) for c in answer for n in PASSAGE_HEADING.findall(c.text)] == list(range(1, 13))
    assert not any(c.buttons for c in answer[:-1]), "buttons belong under the last piece only"


async def test_a_429_is_retried_after_the_wait(telegram: FakeTelegram, bot):
    telegram.fail_next("sendMessage", 429, retry_after=1)
    telegram.private_message("/help")
    refused = await telegram.next_call("sendMessage")
    accepted = await telegram.next_call("sendMessage", timeout=10)

    assert refused.error and refused.error["parameters"]["retry_after"] == 1
    assert accepted.ok and accepted.text == refused.text
    assert accepted.at - refused.at >= 1.0


async def test_polling_survives_a_network_error(telegram: FakeTelegram, bot):
    telegram.fail_next("getUpdates", 502, "Bad Gateway")
    await ask_privately(telegram, "/help")  # the next poll fails...
    reply = await ask_privately(telegram, "/about")  # ...and polling resumes

    assert any(c.error and c.error["error_code"] == 502 for c in telegram.calls_of("getUpdates"))
    assert "<b>Corpus</b>" in reply.text


async def test_start_waits_for_an_unreachable_telegram(telegram: FakeTelegram, assistant):
    telegram.fail_next("getMe", 502, "Bad Gateway")
    settings = Settings(
        telegram_token=telegram.token, telegram_api_url=telegram.base_url, _env_file=None
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_telegram(assistant, settings, stop))
    try:
        reply = await ask_privately(telegram, "/about")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    assert [c.error["error_code"] for c in telegram.calls_of("getMe") if c.error] == [502]
    assert "<b>Corpus</b>" in reply.text


async def test_a_failure_is_logged_and_the_user_told_politely(telegram: FakeTelegram, bot, caplog):
    telegram.fail_next("sendMessage", 400, "Bad Request: chat not found")
    telegram.private_message("/help")
    failed = await telegram.next_call("sendMessage")
    apology = await telegram.next_call("sendMessage")

    assert failed.error and apology.ok and apology.text == html.escape(SORRY)
    assert "handling update" in caplog.text and "chat not found" in caplog.text.lower()
    assert telegram.token not in caplog.text


TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"


async def test_a_press_too_old_to_answer_still_does_its_job(telegram: FakeTelegram, bot):
    """Presses made while the bot was down arrive later, and Telegram refuses to have them
    answered: More still sends the next passages."""
    answer = await ask_privately(telegram, QUESTION)
    telegram.fail_next("answerCallbackQuery", 400, TOO_OLD)
    telegram.press(answer.result, "More ▸")
    more = await telegram.next_call("sendMessage")

    assert [int(n) for n in PASSAGE_HEADING.findall(more.text)] == [4, 5, 6]


async def test_what_a_press_too_old_would_have_shown_comes_as_a_message(
    telegram: FakeTelegram, bot
):
    declined = await ask_privately(telegram, "how do I negotiate my postdoc salary?")
    telegram.fail_next("answerCallbackQuery", 400, TOO_OLD)
    telegram.press(declined.result, "🔔 Tell me when this is covered")
    told = await telegram.next_call("sendMessage")

    assert told.ok and "when I can answer this question" in told.text


async def test_in_a_group_following_a_question_says_to_start_a_private_chat_first(
    telegram: FakeTelegram, bot
):
    """Telegram refuses a bot's first message to someone who never started a chat with it:
    "I will send you a private message" alone was a promise the bot could not keep."""
    telegram.group_message(f"{MENTION} how do I negotiate my postdoc salary?")
    declined = await telegram.next_call("sendMessage")
    telegram.press(declined.result, "🔔 Tell me when this is covered", user_id=2002)
    told = await telegram.next_call("answerCallbackQuery")

    assert told.ok and told.params["show_alert"] is True
    assert f"t.me/{BOT_USER['username']}" in told.params["text"]
    assert "press Start" in told.params["text"]


async def test_an_area_page_that_cannot_be_edited_comes_as_a_message(
    telegram: FakeTelegram, bot, assistant
):
    first = await ask_privately(telegram, "/area valuation")
    telegram.fail_next("editMessageText", 400, "Bad Request: message can't be edited")
    telegram.press(first.result, "Next ▸")
    page = await telegram.next_call("sendMessage")

    assert "Page 2 of" in page.text


async def test_no_apology_where_the_bot_may_not_write(telegram: FakeTelegram, bot, caplog):
    telegram.fail_next("sendMessage", 400, "Bad Request: not enough rights to send text messages")
    telegram.private_message("/help")
    refused = await telegram.next_call("sendMessage")
    telegram.private_message("/about")
    about = await telegram.next_call("sendMessage")  # the next message sent is the next reply

    assert refused.error and SORRY not in about.text and "Corpus" in about.text
    assert "may not write there" in caplog.text and "Traceback" not in caplog.text


async def test_pinning_an_answer_gets_no_reply(telegram: FakeTelegram, bot):
    answer = await ask_privately(telegram, QUESTION)
    telegram.pinned_in_private(answer.result)
    telegram.private_message("/about")
    about = await telegram.next_call("sendMessage")  # the next message sent is /about's

    assert "Corpus" in about.text


async def test_an_expired_button_is_explained(telegram: FakeTelegram, bot):
    old = {"message_id": 3, "date": 0, "chat": {"id": USER_ID, "type": "private"}, "text": "old"}
    telegram.press_data(old, "f" * 64)
    answer = await telegram.next_call("answerCallbackQuery")

    assert "expired" in answer.params["text"]


@pytest.mark.parametrize(
    "text",
    [
        "   \n\t ",
        "<b>hi</b> & <script>alert('x')</script>",
        "🤔🔥🧪 who owns my lab's results? 🧬",
        "Wem gehören die Ergebnisse eines gemeinsamen Forschungsprojekts?",
        "合作研究成果的知识产权归谁所有？",
    ],
    ids=["whitespace", "html-like", "emoji", "german", "chinese"],
)
async def test_odd_input_gets_a_sensible_reply(telegram: FakeTelegram, bot, text):
    reply = await ask_privately(telegram, text)

    assert reply.ok and html.escape(SORRY) not in reply.text
    assert "<script>" not in reply.text
    if not text.strip():
        assert "Please type a question" in reply.text


async def test_rate_limit_is_explained_politely(
    telegram: FakeTelegram, retriever: Retriever, store: Store
):
    async with running_bot(telegram, Assistant(retriever, store, rate_limit_per_minute=2)):
        replies = [await ask_privately(telegram, f"{QUESTION} ({n})") for n in range(3)]

    assert all(PASSAGE_HEADING.search(r.text) for r in replies[:2])
    assert "faster than I can keep up" in replies[2].text


async def test_ipbot_run_answers_and_stops_on_sigterm(
    telegram: FakeTelegram, retriever: Retriever, data_dir: Path, tmp_path: Path
):
    env = ipbot_env(
        data_dir,
        IPBOT_TELEGRAM_TOKEN=telegram.token,
        IPBOT_TELEGRAM_API_URL=telegram.base_url,
        IPBOT_LOG_LEVEL="DEBUG",
    )
    async with ipbot_running(env, tmp_path) as process:
        await telegram.next_call("setMyCommands", timeout=120)
        reply = await ask_privately(telegram, QUESTION)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        code = await asyncio.wait_for(process.wait(), timeout=15)
    log = (tmp_path / "ipbot.log").read_text(errors="replace")

    assert PASSAGE_HEADING.search(reply.text), log[-2000:]
    assert code == 0 and time.monotonic() - stopped < 5, log[-2000:]
    assert telegram.token.split(":")[1] not in log, "the token leaked into the output"


def leaked(log: str, token: str) -> list[str]:
    """The forms of the token's secret part (plain, URL-encoded, HTML entities) in `log`."""
    return [form for form in url_echoes(token.partition(":")[2]) if form in log]


async def test_a_refusal_that_echoes_the_token_ends_ipbot_with_a_redacted_line(
    telegram: FakeTelegram, retriever: Retriever, data_dir: Path, tmp_path: Path
):
    # a proxy that blocks refuses every call: the broadcast sender's check of the bot and the
    # chat application's both get the refusal, whichever asks first
    for _ in range(2):
        telegram.fail_next("getMe", 403, "Forbidden: blocked by proxy", echo_url=True)
    env = ipbot_env(
        data_dir,
        IPBOT_TELEGRAM_TOKEN=telegram.token,
        IPBOT_TELEGRAM_API_URL=telegram.base_url,
        IPBOT_LOG_LEVEL="DEBUG",
    )
    async with ipbot_running(env, tmp_path) as process:
        code = await asyncio.wait_for(process.wait(), timeout=120)
    log = (tmp_path / "ipbot.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("ipbot: error:")]

    assert code != 0 and len(errors) == 1, log[-2000:]
    assert "blocked by proxy" in errors[0] and "<redacted>" in errors[0]
    assert not leaked(log, telegram.token), "the token leaked into the output"


async def test_a_conflict_that_echoes_the_token_is_logged_redacted_and_polling_goes_on(
    telegram: FakeTelegram, retriever: Retriever, data_dir: Path, tmp_path: Path
):
    env = ipbot_env(
        data_dir,
        IPBOT_TELEGRAM_TOKEN=telegram.token,
        IPBOT_TELEGRAM_API_URL=telegram.base_url,
        IPBOT_LOG_LEVEL="DEBUG",
    )
    async with ipbot_running(env, tmp_path) as process:
        await telegram.next_call("setMyCommands", timeout=120)
        telegram.fail_next(
            "getUpdates", 409, "Conflict: terminated by other getUpdates request", echo_url=True
        )
        before = await ask_privately(telegram, "/about")  # the poll after this one fails
        after = await ask_privately(telegram, "/about")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=15)
    log = (tmp_path / "ipbot.log").read_text(errors="replace")

    assert before.ok and after.ok and code == 0, log[-2000:]
    assert "terminated by other getUpdates request" in log and "<redacted>" in log
    assert not leaked(log, telegram.token), "the token leaked into the log"


async def test_a_token_revoked_while_polling_stops_the_adapter(
    telegram: FakeTelegram, assistant: Assistant
):
    settings = Settings(
        telegram_token=telegram.token, telegram_api_url=telegram.base_url, _env_file=None
    )
    task = asyncio.create_task(run_telegram(assistant, settings, asyncio.Event()))
    await telegram.next_call("setMyCommands")
    telegram.fail_next("getUpdates", 401, "Unauthorized")
    telegram.private_message("/help")  # ends the pending long poll: the next one fails

    with pytest.raises(SettingsError, match="Telegram rejected IPBOT_TELEGRAM_TOKEN"):
        await asyncio.wait_for(task, 15)


async def test_a_flood_gets_one_notice_then_silence_without_typing(
    telegram: FakeTelegram, retriever: Retriever, store: Store
):
    async with running_bot(telegram, Assistant(retriever, store, rate_limit_per_minute=2)):
        for n in range(20):
            telegram.private_message(f"{QUESTION} ({n})")
        replies = [await telegram.next_call("sendMessage") for _ in range(3)]
        await asyncio.sleep(1.0)  # time enough for the other 17 to be (not) answered

    assert sum(bool(PASSAGE_HEADING.search(r.text)) for r in replies) == 2
    assert sum("faster than I can keep up" in r.text for r in replies) == 1
    assert len(telegram.calls_of("sendMessage")) == 3, "a flood must not be answered"
    assert len(telegram.calls_of("sendChatAction")) == 2, "no typing for dropped messages"


async def test_more_presses_count_toward_the_rate_limit(
    telegram: FakeTelegram, retriever: Retriever, store: Store
):
    async with running_bot(telegram, Assistant(retriever, store, rate_limit_per_minute=2)):
        answer = await ask_privately(telegram, QUESTION)
        for _ in range(10):
            telegram.press(answer.result, "More ▸")
        replies = [await telegram.next_call("sendMessage") for _ in range(2)]
        await asyncio.sleep(1.0)

    assert sum(bool(PASSAGE_HEADING.search(r.text)) for r in replies) == 1
    assert sum("faster than I can keep up" in r.text for r in replies) == 1
    assert len(telegram.calls_of("sendMessage")) == 3, "60 presses gave 60 answers"
    assert all(c.ok for c in telegram.calls_of("answerCallbackQuery"))


async def test_inline_paging_counts_toward_the_rate_limit(
    telegram: FakeTelegram, retriever: Retriever, store: Store
):
    async with running_bot(telegram, Assistant(retriever, store, rate_limit_per_minute=2)):
        for offset in ("", "3", "6", "9", "12"):
            telegram.inline_query("joint ownership agreement", offset=offset)
        answers = [await telegram.next_call("answerInlineQuery") for _ in range(3)]
        await asyncio.sleep(1.0)

    notices = [a for a in answers if a.params["results"][0]["id"] == "notice"]
    assert len(notices) == 1 and len(telegram.calls_of("answerInlineQuery")) == 3


async def test_a_replayed_vote_button_counts_once(telegram: FakeTelegram, bot, assistant):
    answer = await ask_privately(telegram, QUESTION)
    vote = next(b for b in answer.buttons if b["text"] == "👍 Helpful")
    for _ in range(5):
        telegram.press_data(answer.result, vote["callback_data"])
    answers = [await telegram.next_call("answerCallbackQuery") for _ in range(5)]

    assert [a.params["text"] for a in answers].count("Thank you for your feedback!") == 1
    assert await assistant.store.feedback_counts() == {True: 1}


async def test_a_question_with_broken_characters_spoils_no_one_elses_answer(
    telegram: FakeTelegram, bot
):
    telegram.private_message("Who owns \ud800 joint results?\x00\x1b[31m", user_id=2001)
    telegram.private_message(QUESTION, user_id=2002)
    replies = {
        int(c.params["chat_id"]): c for c in [await telegram.next_call("sendMessage") for _ in "ab"]
    }

    assert set(replies) == {2001, 2002} and all(r.ok for r in replies.values())
    assert PASSAGE_HEADING.search(replies[2002].text), "the other user's answer was spoiled"
    assert html.escape(SORRY) not in replies[2001].text


def test_one_message_renderings_keep_every_item_they_promise(retriever: Retriever) -> None:
    """A digest, a "now covered" notice and /queue are each one message: they were cut at
    Telegram's limit, losing updates, cited passages, or the text of a suggestion whose
    buttons were still shown."""
    import datetime as dt

    from bot.replies import SuggestionQueue
    from bot.sender import Bulletin, PersonalMessage
    from bot.store import Suggestion
    from bot.telegram_format import LIMIT, render_bulletin, render_personal, render_queue
    from bot.telegram_format import visible_length as length

    updates = long_digest(retriever.corpus.areas[:2])
    digest = render_bulletin(Bulletin(updates, digest=True))
    assert length(digest) <= LIMIT and all(f"Update {n}<" in digest for n in range(11))
    assert "/unsubscribe" in digest

    hits = retriever.answer("who owns the results of a joint research project?").hits
    question = "who owns the results of our joint project " * 45  # 1,800 characters
    covered = render_personal(PersonalMessage("covered", f"Now covered: {question}", "Lead.", hits))
    assert length(covered) <= LIMIT and all(hit.passage.title in covered for hit in hits)
    assert DISCLAIMER in covered

    now = dt.datetime(2026, 11, 30)
    queue = render_queue(SuggestionQueue(tuple(
        Suggestion(n, now, "telegram", None, "example", None, "An example. " * 60,
                   "https://example.org/" + "x" * 300, "open")
        for n in range(1, 6)
    )))  # fmt: skip
    [text] = queue.texts
    shown = [n for n in range(1, 6) if f"<b>#{n}</b>" in text]
    buttons = [b.text for row in queue.keyboard.inline_keyboard for b in row]  # type: ignore[union-attr]
    assert length(text) <= LIMIT and shown
    assert buttons == [f"{verb} #{n}" for n in shown for verb in ("✅ Accept", "✖ Reject")]
