"""The assistant: every command's logic, once, for every chat platform.

Adapters turn a platform event into a call here and format the typed reply they get back.
Nothing in this module knows about Telegram, Discord or the terminal.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.conversation import Conversations
from bot.settings import Settings
from retrieval.corpus import Area, Passage
from retrieval.embedder import MicroBatcher
from retrieval.index import Progress
from retrieval.search import Answer, Retriever, UserInputError, clean_question, open_retriever

log = logging.getLogger(__name__)

DISCLAIMER = (
    "Guidance from the EU Code of Practice on managing intellectual assets "
    "(Recommendation (EU) 2023/499) and related EU sources, not legal advice."
)
HELPDESK_URL = "https://intellectual-property-helpdesk.ec.europa.eu/"
HUMAN_HELP = (
    "For advice on your own case, ask the European IP Helpdesk (free and confidential) "
    "or your institution's technology transfer office."
)
NOT_COVERED = "I could not find this in the Code of Practice material I can cite."
EXAMPLE_QUESTION = "Who owns the results of a joint research project?"
AREA_PAGE_SIZE = 5


@dataclass(frozen=True)
class User:
    """Who asked, as a platform-qualified ID: enough for rate limits, nothing personal."""

    platform: str
    id: str

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.id}"


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    description: str


COMMANDS: tuple[Command, ...] = (
    Command("ask", "/ask QUESTION", "ask a question about managing IP in research"),
    Command("areas", "/areas", "list the nine areas of the Code of Practice"),
    Command("area", "/area NAME", "browse one area's recommendations and examples"),
    Command("about", "/about", "corpus version and when it was last indexed"),
    Command("help", "/help", "what I can do"),
)


@dataclass(frozen=True)
class AnswerReply:
    """A question's answer, or an honest "not covered" with suggestions."""

    answer: Answer
    disclaimer: str = DISCLAIMER


@dataclass(frozen=True)
class AreaSummary:
    area: Area
    passages: int


@dataclass(frozen=True)
class AreaList:
    areas: tuple[AreaSummary, ...]


@dataclass(frozen=True)
class AreaPage:
    """One page of an area's passages, for browsing without a question."""

    area: Area
    passages: tuple[Passage, ...]
    page: int
    pages: int


@dataclass(frozen=True)
class HelpReply:
    intro: str
    commands: tuple[Command, ...]
    example: str
    disclaimer: str = DISCLAIMER


@dataclass(frozen=True)
class AboutReply:
    corpus_version: str
    corpus_hash: str
    indexed_at: str | None
    passages: int
    model: str


@dataclass(frozen=True)
class Notice:
    """A short message instead of an answer: usage hints, rate limits, polite errors."""

    kind: str  # "usage", "rate_limited", "error", "unknown_command"
    text: str


Reply = AnswerReply | AreaList | AreaPage | HelpReply | AboutReply | Notice


@dataclass(frozen=True)
class Feedback:
    """A helpful / not helpful vote on an answer, kept without the user's identity."""

    platform: str
    question: str
    passage_ids: tuple[str, ...]
    helpful: bool
    at: float


class RateLimiter:
    """At most `limit` events per user in any `window` seconds (a sliding window)."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit, self.window, self._clock = limit, window, clock
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now = self._clock()
        events = self._events[key]
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def retry_after(self, key: str) -> int:
        events = self._events.get(key)
        if not events:
            return 0
        return max(1, int(self.window - (self._clock() - events[0])) + 1)


class Assistant:
    """What ipbot does for a user, whatever the platform."""

    def __init__(
        self,
        retriever: Retriever,
        top_k: int = 3,
        rate_limit_per_minute: int = 10,
    ):
        self.retriever = retriever
        self.top_k = top_k
        self.rate_limiter = RateLimiter(rate_limit_per_minute)
        self._batcher = MicroBatcher(retriever.embedder)
        self.feedback: list[Feedback] = []  # kept in memory until storage lands
        self.conversations = Conversations()

    async def ask(
        self,
        user: User,
        question: str,
        area: str | None = None,
        offset: int = 0,
        conversation: str | None = None,
    ) -> AnswerReply | Notice:
        """Answer a question; paging through more results of it is not rate limited.

        With a `conversation` key (see `chat_key`), a follow-up such as "and for software?"
        is read together with that chat's previous question, and the answer says so.
        """
        try:
            text, notes = clean_question(question)
            area_filter = self.retriever.resolve_area(area) if area else None
        except UserInputError as exc:
            return Notice("usage", str(exc))
        if conversation and offset == 0:
            understood = self.conversations.understand(conversation, text)
            text = understood.text
            notes = (*notes, understood.note) if understood.note else notes
        if offset == 0 and not self.rate_limiter.allow(user.key):
            wait = self.rate_limiter.retry_after(user.key)
            return Notice(
                "rate_limited",
                f"You are asking faster than I can keep up with. Please try again in {wait} s.",
            )
        vector = await self._batcher.embed(self.retriever.search_text(text))
        answer = self.retriever.answer_with_vector(
            text, vector, area_filter, self.top_k, offset=max(0, offset), notes=notes
        )
        log.info("question answered=%s area=%s", answer.answered, answer.area and answer.area.slug)
        return AnswerReply(answer)

    def record_feedback(
        self, user: User, question: str, passage_ids: tuple[str, ...], helpful: bool
    ) -> Notice:
        """Keep a vote for moderators; the user is not stored, only the platform."""
        self.feedback.append(Feedback(user.platform, question, passage_ids, helpful, time.time()))
        log.info("feedback helpful=%s passages=%s", helpful, ",".join(passage_ids))
        return Notice("feedback", "Thank you for your feedback!")

    def areas(self) -> AreaList:
        corpus = self.retriever.corpus
        return AreaList(
            tuple(AreaSummary(area, len(corpus.passages_in(area.slug))) for area in corpus.areas)
        )

    def browse(self, area: str, page: int = 0) -> AreaPage | Notice:
        """A page of an area's passages, recommendations first."""
        if not area.strip():
            return Notice("usage", "Name an area, for example: /area valuation. See /areas.")
        try:
            found = self.retriever.resolve_area(area)
        except UserInputError as exc:
            return Notice("usage", str(exc))
        order = {"recommendation": 0, "example": 1, "definition": 2}
        passages = sorted(
            self.retriever.corpus.passages_in(found.slug), key=lambda p: (order[p.kind], p.id)
        )
        pages = max(1, -(-len(passages) // AREA_PAGE_SIZE))
        page = min(max(0, page), pages - 1)
        chunk = passages[page * AREA_PAGE_SIZE : (page + 1) * AREA_PAGE_SIZE]
        return AreaPage(found, tuple(chunk), page, pages)

    def help(self) -> HelpReply:
        intro = (
            "I answer questions about managing intellectual property in research and innovation "
            "with cited passages from the EU Code of Practice on the management of intellectual "
            "assets for knowledge valorisation and related EU guidance. Ask in plain words."
        )
        return HelpReply(intro, COMMANDS, EXAMPLE_QUESTION)

    def about(self) -> AboutReply:
        corpus = self.retriever.corpus
        index = self.retriever.index
        return AboutReply(
            corpus_version=corpus.version,
            corpus_hash=corpus.hash[:12],
            indexed_at=index.manifest.built_at,
            passages=len(corpus.passages),
            model=index.manifest.model,
        )

    async def handle_text(self, user: User, text: str, conversation: str | None = None) -> Reply:
        """A line typed by a user: a /command or, otherwise, a question."""
        stripped = text.strip()
        if not stripped.startswith("/"):
            return await self.ask(user, stripped, conversation=conversation)
        name, _, rest = stripped[1:].partition(" ")
        name = name.split("@", 1)[0].lower()  # Telegram appends @botname in groups
        rest = rest.strip()
        if name == "ask":
            if not rest:
                return Notice(
                    "usage", f"Type your question after /ask, e.g. /ask {EXAMPLE_QUESTION}"
                )
            return await self.ask(user, rest, conversation=conversation)
        if name == "areas":
            return self.areas()
        if name == "area":
            return self.browse(rest)
        if name in ("help", "start"):
            return self.help()
        if name == "about":
            return self.about()
        return Notice("unknown_command", f"I don't know /{name}. Type /help to see what I can do.")


def configured_retriever(settings: Settings, progress: Progress = lambda _msg: None) -> Retriever:
    """Corpus, model and index as the settings say, ready to answer."""
    return open_retriever(
        settings.corpus_dir,
        settings.data_dir,
        settings.model,
        settings.index_type,
        settings.policy,
        progress,
    )


def create_assistant(settings: Settings, progress: Progress = lambda _msg: None) -> Assistant:
    """Load corpus, model and index as configured, and wrap them in an assistant."""
    retriever = configured_retriever(settings, progress)
    return Assistant(retriever, settings.top_k, settings.rate_limit_per_minute)
