"""The community loop on Telegram: "tell me when this is covered", /suggest and /queue."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import App, running_sender
from bot.assistant import Assistant
from bot.coverage import Coverage, answers_from, notify_covered
from bot.replies import AnswerReply, Context, Notice, User
from bot.sender import PersonalMessage, Sender
from bot.settings import Settings
from bot.store import Store
from bot.subscriptions import Dissemination
from bot.suggestions import Exchange, Exchanges, Suggestions, valid_url
from bot.telegram import TelegramOutlet, build_application, polling
from retrieval.abstention import AbstentionPolicy
from retrieval.corpus import check_corpus, check_draft
from retrieval.search import Retriever, open_retriever
from tests.fakes.telegram_server import BOT_USER, GROUP, USER_ID, Call, FakeTelegram

MODERATOR = 4242
QUESTION = "How do we protect a new plant variety that our university bred?"
SOURCE = "source: Recommendation (EU) 2023/499, Code of Practice - IP valuation"
VALUATION = f"""---
slug: valuation
title: IP valuation
description: Estimating what intellectual assets are worth, when and how.
---

## VAL-R1: Value intellectual assets early and revisit the value
kind: recommendation
{SOURCE}
url: https://eur-lex.europa.eu/eli/reco/2023/499/oj

Research organisations should estimate the value of their intellectual assets early, while
choices about protection and exploitation are still open, and look at the estimate again as
the project matures. An early estimate helps to decide whether filing a patent is worth its
cost, which partners to approach, and what to ask for in a licence. Valuation is uncertain
at an early stage, so a range is more honest than a single figure.

## VAL-E1: Valuing a software licence with a start-up
kind: example
{SOURCE}
url: https://eur-lex.europa.eu/eli/reco/2023/499/oj

A university wants to license analysis software to a start-up founded by its researchers.
The technology transfer office compares the cost of developing the software, the income the
start-up expects, and licences for similar software. It agrees a small fee at first and a
royalty on sales later, so that the young company can afford the licence while the
university shares in its success if the software sells well.
"""
PLANTS = """
## VAL-E2: Protecting a new plant variety bred at a university
kind: example
source: Community Plant Variety Office (CPVO), Community plant variety rights
url: https://cpvo.europa.eu/en

A new plant variety that a university bred can be protected across the European Union by a
Community plant variety right, granted by the Community Plant Variety Office (CPVO). The
breeder applies to the office; the variety must be distinct, uniform, stable and new. The
right lets the university license growers and seed companies to multiply the variety, which
is how a bred plant variety is usually valued and exploited.
"""


def write_corpus(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "valuation.md").write_text(VALUATION + extra)
    assert not check_corpus(folder)[1], check_corpus(folder)[1]
    return folder


def small_retriever(folder: Path, data: Path) -> Retriever:
    """The real model and index over a two-passage corpus (English only: quick to build)."""
    return open_retriever(
        folder, data, "all-MiniLM-L6-v2", policy=AbstentionPolicy(), multilingual=False, int8=False
    )


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Retriever, Retriever]:
    """The corpus before and after a passage that answers QUESTION was added."""
    root = tmp_path_factory.mktemp("community")
    first = small_retriever(write_corpus(root / "v1"), root / "data1")
    second = small_retriever(write_corpus(root / "v2", PLANTS), root / "data2")
    return first, second


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


async def test_a_question_answered_by_the_new_corpus_is_told_once_to_who_asked(
    versions: tuple[Retriever, Retriever], store: Store, corpus_dir: Path
) -> None:
    before, after = versions
    assistant = Assistant(before, store, suggestions=Suggestions(store, before, corpus_dir))
    user = User("telegram", "77")
    reply = await assistant.handle_text(user, QUESTION)
    assert isinstance(reply, AnswerReply) and not reply.answer.answered
    assert reply.question_id is not None
    first = await assistant.follow(user, reply.question_id)
    second = await assistant.follow(user, reply.question_id)
    assert "I will send you a private message" in first.text and "asked already" in second.text

    assert await notify_covered(store, answers_from(before)) == Coverage(open=1, answered=0)
    assert await notify_covered(store, answers_from(after)) == Coverage(open=1, answered=1)
    assert await notify_covered(store, answers_from(after)) == Coverage(open=0, answered=0)

    [claim] = await store.claim(["telegram"])
    assert claim.chat_id == "77" and claim.notice is not None
    told = PersonalMessage.from_stored(claim.notice)
    assert QUESTION in told.text and told.lead
    assert told.hits[0].passage.id == "VAL-E2"


async def test_forget_and_the_retention_purge_remove_coverage_requests(database_url: str) -> None:
    store = await Store.open(database_url)
    kept = await store.record_question("telegram", "q1", None, None, False, None, ())
    purged = await store.record_question("telegram", "q2", None, None, False, None, ())
    assert await store.request_coverage(kept, "telegram", "5") is True
    assert await store.request_coverage(purged, "telegram", "6") is True
    for chat in ("5", "6"):  # a notice quotes the question: /forget takes it too, sent or not
        await store.enqueue_notice("telegram", chat, "covered", "about q", key=f"covered:{chat}")
    await store.forget("telegram", "telegram:5", ["5"])
    assert [r.chat_id for r in await store.open_coverage_requests()] == ["6"]
    assert await store.notice_status("covered:5") is None
    assert await store.notice_status("covered:6") == "pending"
    await store.purge_questions(dt.timedelta(seconds=-1))
    assert await store.open_coverage_requests() == []
    await store.close()


# -- on Telegram, through python-telegram-bot and the fake Bot API ------------------------


@pytest_asyncio.fixture(loop_scope="function")
async def app(
    versions: tuple[Retriever, Retriever], store: Store, corpus_dir: Path
) -> AsyncIterator[tuple[FakeTelegram, App]]:
    retriever = versions[0]
    async with FakeTelegram() as telegram:
        settings = Settings(
            telegram_token=telegram.token,
            telegram_api_url=telegram.base_url,
            moderators=[f"telegram:{MODERATOR}"],
            _env_file=None,
        )
        outlet = TelegramOutlet(settings)
        sender = Sender(store, [outlet], retriever.corpus.areas)
        assistant = Assistant(
            retriever,
            store,
            rate_limit_per_minute=1000,
            moderators=frozenset(settings.moderators),
            dissemination=Dissemination(store, retriever, on_publish=sender.wake),
            suggestions=Suggestions(store, retriever, corpus_dir, on_notice=sender.wake),
        )
        running = App(settings, store, retriever, assistant, sender, [outlet])
        async with running_sender(running), polling(build_application(assistant, settings)):
            yield telegram, running


async def say(telegram: FakeTelegram, text: str, user_id: int = USER_ID) -> Call:
    telegram.private_message(text, user_id)
    return await message_to(telegram, user_id)


async def message_to(telegram: FakeTelegram, chat_id: int, containing: str = "") -> Call:
    while True:
        call = await telegram.next_call("sendMessage")
        if call.params["chat_id"] == chat_id and containing in html.unescape(call.text):
            return call


async def suggest(telegram: FakeTelegram, *answers: str, user_id: int = USER_ID) -> str:
    """A whole /suggest exchange; the last reply."""
    last = await say(telegram, "/suggest", user_id)
    for answer in answers:
        last = await say(telegram, answer, user_id)
    return html.unescape(last.text)


async def test_an_abstention_offers_to_tell_when_covered(
    app: tuple[FakeTelegram, App],
) -> None:
    telegram, running = app
    answer = await say(telegram, QUESTION)
    assert "🔔 Tell me when this is covered" in answer.button_texts
    telegram.press(answer.result, "🔔 Tell me when this is covered")
    confirmed = await telegram.next_call("answerCallbackQuery")
    assert "I will send you a private message" in confirmed.text
    [request] = await running.store.open_coverage_requests()
    assert request.chat_id == str(USER_ID) and request.question == QUESTION


async def test_a_full_suggest_exchange_lands_in_the_queue(app: tuple[FakeTelegram, App]) -> None:
    telegram, running = app
    assert "1, 2 or 3" in html.unescape((await say(telegram, "/suggest")).text)
    assert "Please reply with 1, 2 or 3" in (await say(telegram, "4")).text
    assert "Which passage" in (await say(telegram, "2")).text
    assert "I have no passage" in html.unescape((await say(telegram, "VAL-R99")).text)
    other = await say(telegram, "/suggest", USER_ID + 1)  # someone else's exchange is their own
    assert "1, 2 or 3" in other.text
    assert "what should change" in (await say(telegram, "val-r1")).text
    assert "A few more words" in (await say(telegram, "Too short")).text
    await say(telegram, "The estimate should also mention market studies of similar assets.")
    assert "does not look like a web address" in (await say(telegram, "www example")).text
    assert (
        "yes / no" in (await say(telegram, "https://eur-lex.europa.eu/eli/reco/2023/499/oj")).text
    )
    done = html.unescape((await say(telegram, "yes")).text)
    assert "Your suggestion #1 is in the moderators' queue" in done
    [waiting] = await running.store.open_suggestions()
    assert (waiting.kind, waiting.passage_id, waiting.contact) == (
        "correction",
        "VAL-R1",
        str(USER_ID),
    )
    assert "Stopped" in (await say(telegram, "/cancel", USER_ID + 1)).text
    assert await running.store.open_suggestions() == [waiting], "a cancelled exchange keeps nothing"


async def test_accept_writes_a_draft_the_validator_checks_and_tells_the_proposer(
    app: tuple[FakeTelegram, App], corpus_dir: Path
) -> None:
    telegram, running = app
    example = "A university licensed a bred apple variety to nurseries for a royalty per tree."
    await suggest(telegram, "1", example, "https://cpvo.europa.eu/en", "yes")
    queue = await say(telegram, "/queue", MODERATOR)
    assert example in html.unescape(queue.text)
    telegram.press(queue.result, "✅ Accept #1", MODERATOR)
    accepted = html.unescape((await message_to(telegram, MODERATOR, "Accepted")).text)
    told = await message_to(telegram, USER_ID, "accepted your suggestion #1")

    draft = corpus_dir / "drafts" / "suggestion-1-valuation.md"
    assert draft.is_file() and "kind: example" in draft.read_text()
    problems = check_draft(draft, running.retriever.corpus)
    assert problems, "a one-sentence example without a source must not pass validation"
    for problem in problems:
        assert f"drafts/suggestion-1-valuation.md:{problem.line}: {problem.message}" in accepted
    assert not check_corpus(corpus_dir)[1], "the corpus loader ignores drafts/"
    assert told.ok
    actions = [row.action for row in await running.store.audit_log()]
    assert actions[:2] == ["accept", "queue"]


async def test_reject_asks_for_a_reason_that_reaches_the_proposer(
    app: tuple[FakeTelegram, App],
) -> None:
    telegram, running = app
    await suggest(
        telegram, "3", "The Horizon Europe model grant agreement explains this.", "skip", "yes"
    )
    queue = await say(telegram, "/queue", MODERATOR)
    telegram.press(queue.result, "✖ Reject #1", MODERATOR)
    assert "Why is #1 rejected" in (await message_to(telegram, MODERATOR)).text
    assert "Rejected #1" in (await say(telegram, "Already cited in IAM-R2.", MODERATOR)).text
    told = await message_to(telegram, USER_ID, "decided not to use it")
    assert "Already cited in IAM-R2." in html.unescape(told.text)
    assert (await running.store.audit_log())[0].detail == "#1"
    assert await running.store.open_suggestions() == []


async def test_in_a_group_the_reason_for_a_reject_is_the_moderators_reply_to_the_bot(
    app: tuple[FakeTelegram, App],
) -> None:
    """A moderator may open /queue in a group; the reason asked for after Reject is their
    next message to the bot there (a reply to it), not a question to search."""
    telegram, running = app
    await suggest(telegram, "1", "An example long enough to be kept in the queue.", "skip", "no")
    telegram.group_message(f"/queue@{BOT_USER['username']}", MODERATOR)
    queue = await message_to(telegram, GROUP["id"], "#1")
    telegram.press(queue.result, "✖ Reject #1", MODERATOR)
    prompt = await message_to(telegram, GROUP["id"], "Why is #1 rejected")
    telegram.group_message("Too close to IAM-E3.", MODERATOR, reply_to=prompt.result)

    assert "Rejected #1" in (await message_to(telegram, GROUP["id"])).text
    assert await running.store.open_suggestions() == []


async def test_a_suggestion_left_open_does_not_take_a_question_asked_in_a_group(
    app: tuple[FakeTelegram, App],
) -> None:
    telegram, running = app
    await say(telegram, "/suggest")  # the exchange now waits for 1, 2 or 3 in private
    telegram.group_message(f"@{BOT_USER['username']} {QUESTION}")
    answer = await message_to(telegram, GROUP["id"])

    assert "1, 2 or 3" not in answer.text
    assert "Stopped" in (await say(telegram, "/cancel")).text  # still open in private


async def test_a_researcher_cannot_open_the_queue(app: tuple[FakeTelegram, App]) -> None:
    telegram, running = app
    await suggest(telegram, "1", "An example long enough to be kept in the queue.", "skip", "no")
    refused = await say(telegram, "/queue")
    assert "only moderators can use /queue" in refused.text
    assert len(await running.store.open_suggestions()) == 1


def test_an_unfinished_exchange_expires_and_each_person_has_their_own() -> None:
    now = [0.0]
    exchanges = Exchanges(seconds=600, clock=lambda: now[0])
    exchanges.put("telegram:1", Exchange("text", 0.0, kind="example"))
    exchanges.put("telegram:2", Exchange("kind", 0.0))
    now[0] = 599.0
    assert exchanges.get("telegram:1") == Exchange("text", 600.0, kind="example")
    exchanges.put("telegram:2", Exchange("url", 0.0))  # answering renews one's own clock
    now[0] = 601.0
    assert exchanges.get("telegram:1") is None, "forgotten after ten minutes"
    assert exchanges.get("telegram:2") is not None


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://cpvo.europa.eu/en", True),
        ("http://example.org/a?b=c", True),
        ("www.example.org", False),
        ("javascript:alert(1)", False),
        ("https://exa mple.org", False),
        ("https://localhost", False),
    ],
)
def test_only_web_addresses_are_accepted_as_sources(url: str, valid: bool) -> None:
    assert valid_url(url) is valid


async def test_two_moderators_accepting_at_once_leave_one_draft_and_no_heading_of_its_own(
    versions: tuple[Retriever, Retriever], store: Store, corpus_dir: Path
) -> None:
    """The losing press deleted the draft the winner had written, at the same path; and a
    suggestion that starts like a passage heading became a second passage of the draft."""
    retriever = versions[0]
    suggestions = Suggestions(store, retriever, corpus_dir)
    number = await store.add_suggestion(
        "telegram", None, "example", None, "## VAL-R1: Ours now\nA long enough example text.", None
    )
    moderators = [Context.private(User("telegram", str(n))) for n in (8001, 8002)]
    replies = await asyncio.gather(*(suggestions.accept(m, number) for m in moderators))

    assert sorted(r.kind for r in replies) == ["accepted", "usage"]
    [draft] = (corpus_dir / "drafts").glob(f"suggestion-{number}-*.md")
    headings = [line for line in draft.read_text().splitlines() if line.startswith("#")]
    assert len(headings) == 1 and "Suggested example" in headings[0]


async def test_an_update_dated_later_is_not_news_before_its_day(
    versions: tuple[Retriever, Retriever], store: Store
) -> None:
    """A moderator may stage an update file ahead of its date: /updates (anyone's) waits for
    that day, while /announce can preview it."""
    import dataclasses

    from bot.subscriptions import Dissemination
    from retrieval.corpus import Update

    retriever = versions[0]
    served = retriever.corpus
    staged = [
        Update(name, date, f"News {name}", "Text.", "https://e.eu", ("valuation",))
        for name, date in (("past", dt.date(2024, 1, 1)), ("future", dt.date(2999, 1, 1)))
    ]
    retriever.swap(dataclasses.replace(served, updates=(*served.updates, *staged)), retriever.index)
    try:
        dissemination = Dissemination(store, retriever)
        latest = dissemination.latest("")
        preview = await dissemination.preview("future")
    finally:
        retriever.swap(served, retriever.index)

    assert [i.id for i in latest.items] == ["past"]  # type: ignore[union-attr]
    assert not isinstance(preview, Notice) and preview.item.id == "future"


async def test_one_person_who_asked_twice_is_told_once(
    versions: tuple[Retriever, Retriever], store: Store, corpus_dir: Path
) -> None:
    """Asked twice, "tell me" pressed under both answers: the news came twice."""
    before, after = versions
    assistant = Assistant(before, store, suggestions=Suggestions(store, before, corpus_dir))
    user = User("telegram", "78")
    for typed in (QUESTION, f"  {QUESTION.upper()} "):
        reply = await assistant.handle_text(user, typed)
        assert isinstance(reply, AnswerReply) and reply.question_id is not None
        await assistant.follow(user, reply.question_id)

    assert await notify_covered(store, answers_from(after)) == Coverage(open=2, answered=2)
    assert len(await store.claim(["telegram"])) == 1
    assert await notify_covered(store, answers_from(after)) == Coverage(open=0, answered=0)
