"""The console chat: the same assistant as every platform, readable in a terminal."""

from __future__ import annotations

import pytest

from bot.assistant import Assistant
from bot.console import ConsoleChat, run_console
from bot.store import Store
from retrieval.search import Retriever


@pytest.fixture
def chat(assistant: Assistant) -> ConsoleChat:
    return ConsoleChat(assistant)


async def test_question_gets_area_cited_passages_and_disclaimer(chat: ConsoleChat) -> None:
    reply = await chat.send("who owns results generated jointly in a horizon europe project")
    assert "\nArea: " in reply
    assert reply.count("Source: ") == 3 and "https://" in reply
    assert reply.count("*") >= 2  # the best sentence of each passage is marked
    assert "not legal advice" in reply


async def test_answer_leads_with_the_sentence_that_answers_and_hides_internal_tags(
    chat: ConsoleChat,
) -> None:
    reply = await chat.send("who owns results generated jointly in a horizon europe project")
    lead = reply.split("\n\n", 1)[0]
    assert " ".join(lead.split()) in " ".join(reply.split("\nArea: ", 1)[1].split()).replace(
        "*", ""
    )
    assert "[recommendation" not in reply and "[example" not in reply
    sources = await chat.send("/sources")
    assert sources.startswith("1. [") and "https://" in sources


async def test_disclaimer_is_shown_once_per_session(chat: ConsoleChat) -> None:
    first = await chat.send("who owns results generated jointly in a horizon europe project")
    second = await chat.send("how do I value a patent")
    assert "not legal advice" in first and "not legal advice" not in second


async def test_console_wraps_at_the_terminal_width_without_breaking_words(
    chat: ConsoleChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    reply = await chat.send("what is a material transfer agreement")
    lines = reply.splitlines()
    assert all(len(line) <= 50 or "://" in line or " " not in line.strip() for line in lines)
    words = set(" ".join(lines).split())
    assert "agreement" in words or "agreement," in words or "agreement." in words


async def test_help_lists_next_and_sources(chat: ConsoleChat) -> None:
    reply = await chat.send("/help")
    assert "/next" in reply and "/sources" in reply


async def test_off_topic_question_is_declined_with_areas_and_human_help(chat: ConsoleChat) -> None:
    reply = await chat.send("what's a good recipe for pancakes")
    assert "could not find this" in reply and "Did you mean" in reply
    assert "European IP Helpdesk" in reply and "Source:" not in reply


async def test_more_shows_the_next_passages(chat: ConsoleChat) -> None:
    first = await chat.send("how do I value a patent")
    more = await chat.send("/more")
    assert "1. " in first and "4. " in more and "1. " not in more


async def test_more_without_a_question_explains(chat: ConsoleChat) -> None:
    assert "Ask a question first" in await chat.send("/more")


async def test_areas_lists_the_nine_areas_with_counts(
    chat: ConsoleChat, retriever: Retriever
) -> None:
    reply = await chat.send("/areas")
    for area in retriever.corpus.areas:
        count = len(retriever.corpus.passages_in(area.slug))
        assert f"- {area.slug} ({count} passages)" in reply


async def test_area_browses_and_pages(chat: ConsoleChat) -> None:
    first = await chat.send("/area valuation")
    second = await chat.send("/next")
    assert "Page 1 of" in first and "[recommendation] VAL-R" in first
    assert "Page 2 of" in second


async def test_unknown_area_suggests_the_closest(chat: ConsoleChat) -> None:
    reply = await chat.send("/area open sciense")
    assert "Did you mean 'open-science'?" in reply


async def test_help_about_and_unknown_commands(chat: ConsoleChat) -> None:
    assert "/areas" in await chat.send("/help") and "Try:" in await chat.send("/help")
    assert "corpus 20" in await chat.send("/about")
    assert "Type /help" in await chat.send("/frobnicate")
    assert "Type your question after /ask" in await chat.send("/ask")


async def test_blank_and_html_like_input_get_polite_replies(chat: ConsoleChat) -> None:
    assert "Please type a question" in await chat.send("   ")
    reply = await chat.send("<script>alert(1)</script> & who owns the IP?")
    assert reply.strip()


async def test_rate_limit_is_polite(retriever: Retriever, store: Store) -> None:
    chat = ConsoleChat(Assistant(retriever, store, rate_limit_per_minute=2))
    for _ in range(2):
        await chat.send("what is FAIR data")
    assert "try again in" in await chat.send("what is FAIR data")


async def test_repl_answers_until_quit(assistant: Assistant) -> None:
    lines = iter(["what is a spin-off?", "/quit", "never read"])
    written: list[str] = []
    await run_console(assistant, read_line=lambda _prompt: next(lines), write=written.append)
    assert len(written) == 2 and "Source:" in written[1]


async def test_repl_ends_on_end_of_input(assistant: Assistant) -> None:
    def eof(_prompt: str) -> str:
        raise EOFError

    written: list[str] = []
    await run_console(assistant, read_line=eof, write=written.append)
    assert written[0].startswith("ipbot:")
