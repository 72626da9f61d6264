"""The console adapter: chat with ipbot in a terminal, and the plain-text format of every reply.

It is a chat platform like the others (the embedded default when no token is set), so the
same assistant answers here as on Telegram or Discord. `ConsoleChat.send` is also how tests
talk to the bot: push a line, read the reply.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import shutil
import sys
import textwrap
import threading
from collections.abc import Callable, Mapping

from bot import logs
from bot.assistant import Assistant
from bot.replies import (
    HELPDESK_URL,
    HUMAN_HELP,
    SORRY,
    AboutReply,
    AnnouncePreview,
    AnswerReply,
    AreaList,
    AreaPage,
    Context,
    HelpReply,
    Notice,
    Quiet,
    RefreshReply,
    Reply,
    SuggestionQueue,
    UpdatesReply,
    User,
    not_covered,
    problems_note,
)
from bot.subscriptions import announce_token
from retrieval.search import Answer, Hit

MAX_WIDTH = 100  # long lines are hard to read even on a wide terminal
MIN_WIDTH = 40
PROMPT = "you> "
RELOADING = "Checking the corpus files, then building and testing the new version..."
PASTE_SECONDS = 0.05  # lines that follow this fast were pasted, not typed
log = logging.getLogger(__name__)


def width() -> int:
    """The terminal's width now (it may be resized between answers), within readable bounds."""
    columns = shutil.get_terminal_size((88, 24)).columns
    return max(MIN_WIDTH, min(MAX_WIDTH, columns))


def _wrap(text: str, indent: str = "   ", first: str | None = None) -> str:
    """Wrap at the terminal width, never inside a word or a URL."""
    return textwrap.fill(
        text,
        width(),
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def emphasise(text: str, sentence: str, bold: bool) -> str:
    """Mark the best-matching sentence: bold on a terminal, *stars* elsewhere."""
    if not sentence or sentence not in text:
        return text
    marked = f"\033[1m{sentence}\033[0m" if bold else f"*{sentence}*"
    return text.replace(sentence, marked, 1)


def format_hit(number: int, hit: Hit, bold: bool, elsewhere: str = "") -> str:
    p = hit.passage
    body = _wrap(emphasise(p.text, hit.highlight, bold))
    title = _wrap(f"{number}. {p.title}{elsewhere}", first="")
    return f"{title}\n{body}\n{_wrap('Source: ' + p.citation)}\n   {p.url}"


def format_sources(answer: Answer) -> str:
    """Where each passage of an answer comes from, with the IDs moderators use."""
    rows = [
        _wrap(f"{n}. [{h.passage.kind}, {h.passage.id}] {h.passage.title}", first="") + "\n"
        f"{_wrap(h.passage.citation)}\n   {h.passage.url}"
        for n, h in enumerate(answer.hits, start=answer.offset + 1)
    ]
    return "\n".join(rows)


def format_answer(answer: Answer, disclaimer: str, bold: bool = False, in_chat: bool = True) -> str:
    """The answer: a leading line that answers, then the passages; `disclaimer` may be empty.
    Out of the chat (`ipbot ask`) it names none of the chat's commands."""
    lines: list[str] = [_wrap(f"Note: {note}", "") for note in answer.notes]
    if not answer.answered:
        lines.append(_wrap(not_covered(answer), ""))
        if answer.suggestions:
            areas = (
                f"{a.title} (/area {a.slug})" if in_chat else a.title for a in answer.suggestions
            )
            lines.append(_wrap(f"Did you mean one of these areas? {', '.join(areas)}", ""))
        if answer.about_ip:
            lines.append(_wrap(f"{HUMAN_HELP} {HELPDESK_URL}", ""))
        return "\n".join(lines)
    if answer.offset == 0 and answer.lead:
        lines.append(_wrap(answer.lead, "") + "\n")
    if answer.area:
        lines.append(f"Area: {answer.area.title}\n")
    for number, hit in enumerate(answer.hits, start=answer.offset + 1):
        lines.append(format_hit(number, hit, bold, answer.elsewhere(hit)) + "\n")
    if answer.has_more and in_chat:
        lines.append(_wrap("Type /more for more passages, /sources for where they come from.", ""))
    if disclaimer:
        lines.append(_wrap(f"-- {disclaimer}", ""))
    return "\n".join(lines).rstrip()


def format_reply(reply: Reply, bold: bool = False, with_disclaimer: bool = True) -> str:
    """Plain text for a terminal (or any client that shows text as it is)."""
    match reply:
        case AnswerReply(answer=answer, disclaimer=disclaimer):
            return format_answer(answer, disclaimer if with_disclaimer else "", bold)
        case AreaList(areas=areas):
            rows = [
                _wrap(f"- {s.area.slug} ({s.passages} passages): {s.area.description}", "  ", "")
                for s in areas
            ]
            return "The nine areas of the Code of Practice:\n" + "\n".join(rows)
        case AreaPage(area=area, passages=passages, page=page, pages=pages):
            rows = [_wrap(f"- [{p.kind}] {p.id}: {p.title}", "  ", "") for p in passages]
            more = "\nType /next for the next page." if page + 1 < pages else ""
            return (
                f"{_wrap(f'{area.title}: {area.description}', '')}\nPage {page + 1} of {pages}\n"
                + "\n".join(rows)
                + more
            )
        case HelpReply(intro=intro, commands=commands, example=example, disclaimer=disclaimer):
            rows = [f"  {c.usage:<16} {c.description}" for c in commands]
            rows += [
                "  /more            more passages for the last question",
                "  /sources         where the last answer's passages come from",
                "  /next            the next page of an area",
                "  /publish TOKEN   send an update shown by /announce (moderators)",
                "  /quit            leave",
            ]
            return (
                f"{textwrap.fill(intro, width())}\n\nCommands:\n"
                + "\n".join(rows)
                + f"\n\nTry: {example}\n-- {disclaimer}"
            )
        case AboutReply() as about:
            indexed = about.indexed_at or "not yet"
            problems = f"\n{problems_note(about.problems)}" if about.problems else ""
            return (
                f"ipbot corpus {about.corpus_version} ({about.passages} passages, "
                f"hash {about.corpus_hash}), indexed {indexed}, model {about.model}.{problems}"
            )
        case RefreshReply(text=text, offers=offers):
            text = text.replace(" Press a button to publish.", "")  # no buttons here
            publish = [
                f"Publish “{title}” with /publish {token} (/announce {token} shows it first)"
                for title, token in offers
            ]
            return "\n".join([text, *publish])
        case UpdatesReply(items=items, area=area):
            if not items:
                return "No updates yet" + (f" about {area.title}." if area else ".")
            rows = [f"- {i.date:%d %b %Y}: {i.title}\n  {i.url}" for i in items]
            return "Latest news of the Code of Practice:\n" + "\n".join(rows)
        case AnnouncePreview(item=item, subscribers=subscribers, already_published=already):
            token = announce_token(item.id)
            state = (
                "It was already published."
                if already
                else f"It would go to {subscribers} chats. Send it with /publish {token}."
            )
            return (
                f"Preview of {item.id}:\n{item.title}\n{_wrap(item.body, '')}\n{item.url}\n{state}"
            )
        case SuggestionQueue(items=items):
            rows = [
                f"#{s.id} {s.kind}: {s.text}" + (f"\n  {s.url}" if s.url else "") for s in items
            ]
            return (
                "Suggestions waiting (Accept and Reject are buttons on Telegram and Discord):\n"
                + "\n".join(rows)
            )
        case Notice(text=text):
            return text
        case Quiet():
            return ""
    raise TypeError(f"no console format for {type(reply).__name__}")


def terminal_language(environ: Mapping[str, str] = os.environ) -> str | None:
    """The terminal's language (LC_ALL, LC_MESSAGES, LANG: "pl_PL.UTF-8" -> "pl"), as a hint
    like Telegram's language_code; None for the C/POSIX locale."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := environ.get(name, "").strip():
            code = value.split(".")[0].split("_")[0].lower()
            return None if code in ("c", "posix") else code
    return None


class ConsoleChat:
    """One terminal conversation: remembers the last question and area page for paging."""

    def __init__(
        self, assistant: Assistant, bold: bool = False, aside: Callable[[str], None] | None = None
    ):
        self.assistant = assistant
        self.bold = bold
        self.aside = aside  # a line shown at once, before a reply that takes a while
        self.user = User("console", "local", terminal_language())
        self.context = Context.private(self.user)
        self._last_answer: AnswerReply | None = None
        self._last_page: AreaPage | None = None
        self._disclaimer_shown = False

    async def send(self, text: str) -> str:
        """The bot's reply to one line typed by the user. A failure (the database down, say)
        is logged in one line and the user told, and the chat goes on, as on the platforms."""
        try:
            return await self._reply(text)
        except Exception as exc:
            logs.failure(log, "console: a message could not be handled", exc)
            return SORRY

    async def _reply(self, text: str) -> str:
        command = text.strip().lower()
        if command == "/sources":
            return self._sources()
        if command.startswith("/publish"):  # the console's Publish button
            token = text.strip()[len("/publish") :].strip()
            if not token:
                return "Say which update to publish: /publish TOKEN (the /reload summary names it)."
            reply: Reply = await self.assistant.announce_choice(self.context, token, confirm=True)
            return format_reply(reply)
        if command == "/more":
            reply = await self._more()
        elif command == "/next":
            reply = self._next_page()
        else:
            if command.split()[:1] == ["/reload"] and self.aside is not None:
                self.aside(RELOADING)  # the check takes a minute: the prompt must not look dead
            reply = await self.assistant.handle(self.context, text)
        self._remember(reply)
        shown = format_reply(reply, self.bold, with_disclaimer=not self._disclaimer_shown)
        if isinstance(reply, AnswerReply) and reply.answer.answered:
            self._disclaimer_shown = True  # once per session is enough to be read
        return shown

    def _sources(self) -> str:
        if self._last_answer is None:
            return "There are no sources to show yet. Ask a question first."
        return format_sources(self._last_answer.answer)

    def _remember(self, reply: Reply) -> None:
        if isinstance(reply, AnswerReply) and reply.answer.answered:
            self._last_answer = reply
        elif isinstance(reply, AreaPage):
            self._last_page = reply

    async def _more(self) -> Reply:
        last = self._last_answer
        if last is None or last.question_id is None or not last.answer.has_more:
            return Notice("usage", "There is nothing more to show. Ask a question first.")
        answer = last.answer
        return await self.assistant.more(
            self.user, last.question_id, answer.offset + len(answer.hits)
        )

    def _next_page(self) -> Reply:
        page = self._last_page
        if page is None or page.page + 1 >= page.pages:
            return Notice("usage", "There is no next page. Browse an area with /area NAME.")
        return self.assistant.browse(page.area.slug, page.page + 1)


class PastedLines:
    """Reads what is typed at the terminal, joining the lines of one pasted question: a question
    pasted from an e-mail arrives as several lines at once, and each was answered as a question
    of its own. A line that ends a question ("?") or a command line ends the join; the lines
    after it are kept for the next reads. Lines piped in (not a terminal) are read one by one.
    """

    def __init__(self) -> None:
        self._waiting: collections.deque[str] = collections.deque()

    def __call__(self, prompt: str) -> str:
        line = self._waiting.popleft() if self._waiting else input(prompt)
        if not sys.stdin.isatty():
            return line
        self._waiting.extend(_arrived_with_it())
        while self._waiting and _continues(line, self._waiting[0]):
            line = f"{line.strip()} {self._waiting.popleft().strip()}".strip()
        return line


def _arrived_with_it() -> list[str]:
    """Lines already waiting on the terminal: they came with the one just read."""
    lines = []
    with contextlib.suppress(OSError, ValueError):  # no select() on this terminal: line by line
        while select.select([sys.stdin], [], [], PASTE_SECONDS)[0]:
            more = sys.stdin.readline()
            if not more:
                break
            lines.append(more.rstrip("\n"))
    return [line for line in lines if line.strip()]


def _continues(text: str, following: str) -> bool:
    return not text.rstrip().endswith("?") and not following.lstrip().startswith("/")


async def read_aside(read_line: Callable[[str], str], prompt: str) -> str:
    """One line read in a daemon thread while the event loop goes on (the sender, refreshes).

    Not in the loop's executor: on Ctrl+C Python waits at exit for the executor's threads, and
    one of them would sit in `input()` until Enter was pressed.
    """
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str] = loop.create_future()

    def settle(value: str | None, error: BaseException | None) -> None:
        if line.done():  # the chat ended meanwhile
            return
        if error is not None:
            line.set_exception(error)
        else:
            line.set_result(value or "")

    def read() -> None:
        try:
            value, error = read_line(prompt), None
        except BaseException as exc:  # EOFError, KeyboardInterrupt: the chat's to handle
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while this thread waited
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=read, name="console-input", daemon=True).start()
    return await line


async def run_console(
    assistant: Assistant,
    read_line: Callable[[str], str] | None = None,
    write: Callable[[str], None] = print,
) -> None:
    """The REPL: read a line, print the reply, until /quit or end of input."""
    read_line = read_line or PastedLines()
    chat = ConsoleChat(assistant, bold=sys.stdout.isatty(), aside=write)
    write("ipbot: ask me about managing IP in research. /help for commands, /quit to leave.")
    while True:
        try:
            line = await read_aside(read_line, PROMPT)
        except (EOFError, KeyboardInterrupt):
            write("")
            return
        except asyncio.CancelledError:  # Ctrl+C: the chat ends at once
            write("")
            raise
        if line.strip().lower() in ("/quit", "/exit", "quit", "exit"):
            return
        if line.strip() and (reply := await chat.send(line)):
            write(reply + "\n")
