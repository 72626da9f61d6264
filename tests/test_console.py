"""The console chat: the same assistant as every platform, readable in a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.assistant import Assistant
from bot.console import ConsoleChat, format_answer, run_console
from bot.replies import SORRY, AnswerReply, User
from bot.store import Store
from retrieval.search import Retriever
from tests.conftest import ROOT


@pytest.fixture
def chat(assistant: Assistant) -> ConsoleChat:
    return ConsoleChat(assistant)


async def test_question_gets_area_cited_passages_and_disclaimer(chat: ConsoleChat) -> None:
    reply = await chat.send("who owns results generated jointly in a horizon europe project")
    assert "\nArea: " in reply
    assert reply.count("Source: ") == 3 and "https://" in reply
    assert reply.count("*") >= 2  # the best sentence of each passage is marked
    assert "not legal advice" in reply


async def test_a_passage_from_another_area_than_the_answers_is_labelled_with_it(
    assistant: Assistant,
) -> None:
    """The answer's area is its best passage's; the others used to stand under it unlabelled."""
    reply = await assistant.ask(User("console", "1"), "What is a material transfer agreement?")
    assert isinstance(reply, AnswerReply) and reply.answer.area is not None
    answer = reply.answer
    others = [hit for hit in answer.hits if hit.passage.area != answer.area.slug]
    assert others, [hit.passage.id for hit in answer.hits]  # else the question tests nothing
    text = format_answer(answer, "")
    for number, hit in enumerate(answer.hits, start=1):
        assert hit.area is not None
        labelled = f"{number}. {hit.passage.title} — {hit.area.title}" in " ".join(text.split())
        assert labelled == (hit in others), (number, text)


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


async def test_a_moderator_at_the_console_can_publish_an_update(
    chat: ConsoleChat, assistant: Assistant
) -> None:
    """The console's /announce showed a preview with no way to confirm it (the platforms have
    a button), and /help listed none of the moderators' commands."""
    from bot.subscriptions import announce_token

    item = sorted(assistant.dissemination.items.values(), key=lambda i: i.id)[-1]
    token = announce_token(item.id)
    preview = await chat.send(f"/announce {token}")
    assert f"/publish {token}" in preview, preview
    await chat.send(f"/publish {token}")
    assert await assistant.store.is_published(item.id)
    assert "/reload" in await chat.send("/help")


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


@pytest.mark.parametrize(
    "line", ["how do I write a cover letter for a postdoc?", "/areas", "/area valuation"]
)
async def test_declines_and_area_lists_wrap_at_the_terminal_width_too(
    chat: ConsoleChat, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    reply = await chat.send(line)
    assert all(len(row) <= 50 or " " not in row.strip() for row in reply.splitlines())


async def test_help_lists_next_and_sources(chat: ConsoleChat) -> None:
    reply = await chat.send("/help")
    assert "/next" in reply and "/sources" in reply


async def test_off_topic_question_is_declined_as_no_ip_question(chat: ConsoleChat) -> None:
    reply = await chat.send("what's a good recipe for pancakes")
    assert "does not look like one" in reply and "Did you mean" not in reply
    assert "European IP Helpdesk" not in reply and "Source:" not in reply


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


async def test_a_broken_database_gets_an_apology_and_the_chat_goes_on(
    retriever: Retriever, tmp_path: Path
) -> None:
    """Commands that need the database (/stats here) failed with the database and ended the
    whole chat; now the user is told and questions are still answered, without storing."""
    database = tmp_path / "ipbot.db"
    store = await Store.open(f"sqlite:///{database}")
    try:
        chat = ConsoleChat(Assistant(retriever, store))
        for file in tmp_path.glob("ipbot.db*"):  # a real fault, under the open connections
            file.write_bytes(b"not a database any more " * 400)

        assert await chat.send("/stats") == SORRY
        assert "Source:" in await chat.send("who owns the results of a joint project?")
    finally:
        await store.close()


def read_at_a_terminal(*chunks: bytes, pause: float = 0.0) -> str:
    """What `read_pasted` returns in a process whose terminal receives `chunks`, `pause`
    seconds apart (a real pseudo-terminal: pasted text arrives as the terminal sends it)."""
    controller, terminal = pty.openpty()
    script = (
        "from bot.console import PastedLines\n"
        "read = PastedLines()\n"
        "print(repr(read('you> ')))\n"
        "print(repr(read('you> ')))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdin=terminal, stdout=subprocess.PIPE
    )
    os.close(terminal)
    assert process.stdout is not None
    try:
        assert process.stdout.read(len(b"you> ")) == b"you> "  # the prompt: it reads now
        for chunk in chunks:
            os.write(controller, chunk)
            time.sleep(pause)
        out, _ = process.communicate(timeout=30)
    finally:
        os.close(controller)
    return "\n".join(line.removeprefix("you> ") for line in out.decode().strip().splitlines())


def test_lines_pasted_at_once_are_one_question() -> None:
    """A question pasted from an e-mail, over two lines, was answered as two questions."""
    pasted = read_at_a_terminal(b"who owns the results\nwhen we work with a company?\n/quit\n")
    assert pasted.splitlines() == ["'who owns the results when we work with a company?'", "'/quit'"]


@pytest.mark.parametrize(
    "chunks",
    [
        (b"what is a patent?\n", b"and a trademark?\n"),  # typed, half a second apart
        (b"what is a patent?\nand a trademark?\n",),  # two questions, pasted or typed ahead
        (b"what is a patent\n/quit\n",),  # a command is never part of a question
    ],
)
def test_questions_and_commands_arriving_together_stay_apart(chunks: tuple[bytes, ...]) -> None:
    lines = b"".join(chunks).decode().splitlines()
    typed = read_at_a_terminal(*chunks, pause=0.5)
    assert typed.splitlines() == [repr(lines[0]), repr(lines[1])]


def test_ctrl_c_at_the_prompt_ends_the_chat_at_once() -> None:
    """The line is read in a thread: when it was the event loop's executor, Python waited at
    exit for that thread, sitting in input() until Enter, after Ctrl+C."""
    script = (
        "import asyncio, os, signal, threading\n"
        "from bot.console import run_console\n"
        "async def main():\n"
        "    asyncio.get_running_loop().call_later(0.5, os.kill, os.getpid(), signal.SIGINT)\n"
        "    await run_console(object(), lambda _: threading.Event().wait() or '', print)\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.rstrip().endswith("interrupted"), done.stderr


async def test_an_unknown_area_is_echoed_briefly(chat: ConsoleChat) -> None:
    """Telegram split the echo of a long /area argument over several messages."""
    reply = await chat.send("/area " + "valuation nonsense " * 200)
    assert "There is no area called 'valuation nonsense" in reply and len(reply) < 600


@pytest.mark.parametrize(
    ("environ", "language"),
    [
        ({"LANG": "pl_PL.UTF-8"}, "pl"),
        ({"LC_ALL": "de_AT.UTF-8", "LANG": "en_GB.UTF-8"}, "de"),
        ({"LANG": "C.UTF-8"}, None),
        ({}, None),
    ],
)
def test_the_terminals_language_is_the_consoles_hint(environ: dict, language: str | None) -> None:
    """As Telegram's language_code: "Umowa licencyjna?" in a Polish terminal is Polish."""
    from bot.console import terminal_language

    assert terminal_language(environ) == language


async def test_a_short_question_in_the_terminals_language_is_answered(
    assistant: Assistant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANG", "pl_PL.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    reply = await ConsoleChat(assistant).send("Umowa licencyjna?")
    assert "Source:" in reply and "angielsk" in reply  # the Polish note: passages in English
