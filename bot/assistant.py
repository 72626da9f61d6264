"""The assistant: every command's logic, once, for every chat platform.

Adapters turn a platform event into a call here and format the typed reply they get back.
Nothing in this module knows about Telegram, Discord or the terminal.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(frozen=True)
class Quiet:
    """Nothing to send, not even "typing...": the user is over the rate limit and was told."""


Reply = AnswerReply | AreaList | AreaPage | HelpReply | AboutReply | Notice | Quiet
Working = Callable[[], Awaitable[None]]  # an adapter's "typing..." once a question is admitted
MAX_TRACKED_USERS = 50_000  # rate-limit entries kept at most, however many users write at once
MAX_VOTES = 50_000  # (user, answer) pairs remembered to refuse a second vote
MAX_FEEDBACK = 5_000  # votes kept in memory until storage lands


@dataclass(frozen=True)
class Feedback:
    """A helpful / not helpful vote on an answer, kept without the user's identity."""

    platform: str
    question: str
    passage_ids: tuple[str, ...]
    helpful: bool
    at: float


Admission = Literal["allow", "notify", "drop"]


@dataclass(slots=True)
class _Allowance:
    events: list[float] = field(default_factory=list)  # a list: a deque reserves 64 slots
    notified: bool = False
    touched: float = 0.0  # the last event or notice: idle for a window after it, forgotten


class RateLimiter:
    """At most `limit` events per user in any `window` seconds (a sliding window).

    Over the limit a user is told once per window ("notify") and then ignored ("drop"), so
    a flood costs one notice, not one reply per message. Memory is bounded: users idle for a
    whole window are forgotten, and at most `max_users` are tracked (the least recent go).
    """

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = MAX_TRACKED_USERS,
    ):
        self.limit, self.window, self._clock, self.max_users = limit, window, clock, max_users
        self._users: OrderedDict[str, _Allowance] = OrderedDict()  # least recently touched first

    def __len__(self) -> int:
        return len(self._users)

    def check(self, key: str) -> Admission:
        now = self._clock()
        self._forget_idle(now)
        allowance = self._users.get(key) or _Allowance()
        events = allowance.events
        del events[: bisect.bisect_right(events, now - self.window)]  # out of the window
        if len(events) < self.limit:
            events.append(now)
            allowance.notified = False
        elif allowance.notified:
            return "drop"
        else:
            allowance.notified = True
        allowance.touched = now
        self._users[key] = allowance
        self._users.move_to_end(key)
        return "notify" if allowance.notified else "allow"

    def retry_after(self, key: str) -> int:
        allowance = self._users.get(key)
        if allowance is None or not allowance.events:
            return 0
        return max(1, int(self.window - (self._clock() - allowance.events[0])) + 1)

    def _forget_idle(self, now: float) -> None:
        """Drop users idle for a window (oldest first: the dict is in order of last touch)."""
        while self._users:
            key, oldest = next(iter(self._users.items()))
            if now - oldest.touched < self.window and len(self._users) < self.max_users:
                return
            del self._users[key]


class Votes:
    """One vote per user per answer, remembered for the most recent `limit` votes."""

    def __init__(self, limit: int = MAX_VOTES):
        self.limit = limit
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first(self, user: User, question: str, passage_ids: tuple[str, ...]) -> bool:
        """True the first time this user votes on this answer, False after."""
        answer = "\0".join((user.key, question, *passage_ids)).encode("utf-8", "replace")
        key = hashlib.blake2b(answer, digest_size=16).digest()  # a question may be 2,000 chars
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True


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
        self._votes = Votes()
        self.feedback: deque[Feedback] = deque(maxlen=MAX_FEEDBACK)  # until storage lands

    async def ask(
        self,
        user: User,
        question: str,
        area: str | None = None,
        offset: int = 0,
        working: Working | None = None,
    ) -> AnswerReply | Notice | Quiet:
        """Answer a question, or the next page of its results (which counts as a question too).

        `working` runs once the question is admitted, before the search: adapters show
        "typing..." there, so that a user flooding the bot gets no typing either.
        """
        admission = self.rate_limiter.check(user.key)
        if admission == "drop":
            return Quiet()
        if admission == "notify":
            wait = self.rate_limiter.retry_after(user.key)
            return Notice(
                "rate_limited",
                f"You are asking faster than I can keep up with. Please try again in {wait} s.",
            )
        try:
            text, notes = clean_question(question)
            area_filter = self.retriever.resolve_area(area) if area else None
        except UserInputError as exc:
            return Notice("usage", str(exc))
        if working is not None:
            await working()
        vector = await self._batcher.embed(text)
        answer = self.retriever.answer_with_vector(
            text, vector, area_filter, self.top_k, offset=max(0, offset), notes=notes
        )
        log.info("question answered=%s area=%s", answer.answered, answer.area and answer.area.slug)
        return AnswerReply(answer)

    def record_feedback(
        self, user: User, question: str, passage_ids: tuple[str, ...], helpful: bool
    ) -> Notice:
        """Keep a vote for moderators; the user is not stored, only the platform."""
        if not self._votes.first(user, question, passage_ids):
            return Notice("feedback", "You already rated this answer.")
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

    async def handle_text(self, user: User, text: str, working: Working | None = None) -> Reply:
        """A line typed by a user: a /command or, otherwise, a question."""
        stripped = text.strip()
        if not stripped.startswith("/"):
            return await self.ask(user, stripped, working=working)
        name, _, rest = stripped[1:].partition(" ")
        name = name.split("@", 1)[0].lower()  # Telegram appends @botname in groups
        rest = rest.strip()
        if name == "ask":
            if not rest:
                return Notice(
                    "usage", f"Type your question after /ask, e.g. /ask {EXAMPLE_QUESTION}"
                )
            return await self.ask(user, rest, working=working)
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
