"""The assistant: every command's logic, once, for every chat platform.

Adapters turn a platform event into a call here and format the typed reply they get back.
Nothing in this module knows about Telegram, Discord or the terminal.
"""

from __future__ import annotations

import bisect
import functools
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from bot import logs, metrics
from bot.commands import COMMANDS, Audience, Command, find, public_commands
from bot.conversation import Conversations, Understood, as_asked, small_talk
from bot.coverage import request_coverage
from bot.moderation import DEFAULT_DAYS, MAX_DAYS, Moderation
from bot.refresh import Refresher, versions_text
from bot.replies import (
    EXAMPLE_QUESTION,
    SMALL_TALK,
    AboutReply,
    AnswerReply,
    AreaList,
    AreaPage,
    AreaSummary,
    Context,
    HelpReply,
    Notice,
    Quiet,
    RefreshReply,
    Reply,
    User,
)
from bot.settings import Settings
from bot.store import Store
from bot.subscriptions import Dissemination, announce_token
from bot.suggestions import Suggestions
from retrieval.corpus import Area, Passage
from retrieval.embedder import MicroBatcher
from retrieval.index import Progress, search_on_one_core
from retrieval.multilingual import ENGLISH
from retrieval.search import Answer, Retriever, UserInputError, open_retriever, printable

log = logging.getLogger(__name__)

AREA_PAGE_SIZE = 5
EXPIRED = "This button has expired. Please ask your question again."
NOTHING_MORE = "There is nothing more to show for this question."
REFUSED = "Sorry, only {who} can use /{name}."
Working = Callable[[], Awaitable[None]]  # an adapter's "typing..." once a question is admitted
MAX_TRACKED_USERS = 50_000  # rate-limit entries kept at most, however many users write at once
# questions embedded, then ranked, together. 32 users who each ask again on their answer got
# 0.80x the model's floor with 12 or 16, 0.75x with 8 (a wake-up and a handover per batch) and
# 0.5-0.6x with 24 or 32 (one thread takes most of the crowd while the other waits), and their
# p50 and p95 were no higher with 16 than with 8; one user alone waits for no batch
BATCH = 16
# the multilingual model takes some 45 ms a text: in a batch of 16 the first would wait 0.7 s
BATCH_OTHER_LANGUAGES = 4
# While one thread ranks (holding the GIL), the other waits Python's switch interval (5 ms by
# default) for the GIL after each text it embeds and the event loop as long for each handover
GIL_SWITCH_INTERVAL = 0.001


Admission = Literal["allow", "notify", "drop"]


class _OtherLanguage(Exception):
    """A question the multilingual model answers: handed back from the English model's thread."""

    def __init__(self, language: str, query: str):
        super().__init__(language)
        self.language, self.query = language, query


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


class Assistant:
    """What ipbot does for a user, whatever the platform: every command, once."""

    def __init__(
        self,
        retriever: Retriever,
        store: Store,
        top_k: int = 3,
        rate_limit_per_minute: int = 10,
        moderators: frozenset[str] = frozenset(),
        dissemination: Dissemination | None = None,
        refresher: Refresher | None = None,
        suggestions: Suggestions | None = None,
    ):
        self.retriever = retriever
        self.refresher = refresher
        self.store = store
        self.top_k = top_k
        self.rate_limiter = RateLimiter(rate_limit_per_minute)
        self.moderators = moderators
        self.dissemination = dissemination or Dissemination(store, retriever)
        self._batchers: dict[object, MicroBatcher] = {}  # one per model, made when first needed
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
        self.conversations = Conversations()
        self.moderation = Moderation(store, retriever)
        self.suggestions = suggestions or Suggestions(store, retriever, retriever_corpus_dir())

    # -- questions ------------------------------------------------------------------------

    async def ask(
        self,
        user: User,
        question: str,
        area: str | None = None,
        offset: int = 0,
        remember: bool = True,
        working: Working | None = None,
        conversation: str | None = None,
        language: str | None = None,
    ) -> AnswerReply | Notice | Quiet:
        """Answer a question (or another page of it) and remember it, without who asked.

        Every page counts toward the rate limit; over it, one notice per window, then quiet.
        `working` runs once the question is admitted, before the search: adapters show
        "typing..." there. Inline queries (`remember=False`) fire on every keystroke: they
        are not stored. With a `conversation` key (see `chat_key`), a follow-up such as "and
        for software?" is read together with that chat's previous question, and the answer
        says so. `language` forces the language a page is read in (More continues an answer
        in the language it was answered in); otherwise it is detected, the user's as a hint.
        """
        admission = self.rate_limiter.check(user.key)
        if admission == "drop":
            return Quiet()
        if admission == "notify":
            return self._slow_down(user)
        if offset == 0 and (kind := small_talk(question)) is not None:
            return Notice(kind, SMALL_TALK[kind])  # no question: not searched, not a gap
        try:
            text, notes, area_filter = self.retriever.prepare(question, area)
        except UserInputError as exc:
            return Notice("usage", str(exc))
        understood = Understood(text)
        if conversation and offset == 0:
            understood = self.conversations.understand(conversation, text)
            text = understood.text
        if working is not None:
            await working()
        started = time.perf_counter()
        answer, language = await self._search(
            text, area_filter, max(0, offset), notes, user.language, language
        )
        shown = [hit.passage for hit in answer.hits] if answer.answered else []
        told = (understood.note(language), understood.unmentioned_note(language, shown))
        answer = replace(  # the notes in the language it was read in
            answer,
            question=as_asked(answer.question),
            notes=(*(note for note in told if note), *answer.notes),
        )
        if conversation and offset == 0 and understood.previous is None and not answer.answered:
            self.conversations.forget(conversation)
        log.info(
            "question answered=%s area=%s language=%s",
            answer.answered,
            answer.area and answer.area.slug,
            language,
        )
        latency = (time.perf_counter() - started) * 1000
        if not remember:
            return AnswerReply(answer)
        slug = answer.area.slug if answer.area else None
        metrics.record_question(user.platform, slug, answer.answered, latency / 1000)
        try:
            question_id: int | None = await self.store.record_question(
                user.platform,
                text,
                area_filter.slug if area_filter else None,
                slug,
                answer.answered,
                answer.hits[0].score if answer.hits else None,
                (hit.passage.id for hit in answer.hits),
                latency,
                language,
            )
        except Exception as exc:  # the user still gets the answer, only without its buttons
            logs.failure(log, "the question could not be stored; answering without buttons", exc)
            question_id = None
        return AnswerReply(answer, question_id)

    async def _search(
        self,
        text: str,
        area: Area | None,
        offset: int,
        notes: tuple[str, ...] = (),
        language_hint: str | None = None,
        language: str | None = None,
    ) -> tuple[Answer, str]:
        """The answer to a question and the language it was read in.

        Reading the language (langdetect: milliseconds) and ranking are CPU work, kept off the
        event loop so that it stays free for other users: both run on the English model's
        thread, the language just before the batch is embedded, the ranking as soon as it is,
        while the other model thread embeds the next batch. A question read as another language
        goes on to the multilingual model's batcher from there. Batching never changes an
        answer: each text is embedded on its own.
        """
        search = functools.partial(
            self.retriever.answer_with_vector,
            text, area=area, top_k=self.top_k, offset=offset, notes=notes,
        )  # fmt: skip
        read = functools.partial(self._english_query, text, language_hint, language)
        try:
            return await self._batcher(ENGLISH).embed_then(read, search), ENGLISH
        except _OtherLanguage as other:
            answer = functools.partial(search, language=other.language)
            return await self._batcher(other.language).embed_then(
                other.query, answer
            ), other.language

    def _english_query(self, text: str, language_hint: str | None, known: str | None) -> str:
        """The text MiniLM embeds for a question read as English; raises `_OtherLanguage` (on
        the model's thread) for a question the multilingual model answers. A `known` language
        (an earlier page's) is not detected again."""
        if known is not None and (known == ENGLISH or self.retriever.multilingual is not None):
            language, query = known, self.retriever.query_text(text, known)
        else:
            language, query = self.retriever.language_and_query(text, language_hint)
        if language != ENGLISH:
            raise _OtherLanguage(language, query)
        return query

    def _batcher(self, language: str) -> MicroBatcher:
        """The micro-batcher of the model that reads this language (MiniLM for English)."""
        embedder = self.retriever.query_embedder(language)
        if embedder not in self._batchers:
            size = BATCH if embedder is self.retriever.embedder else BATCH_OTHER_LANGUAGES
            self._batchers[embedder] = MicroBatcher(
                embedder, max_batch=size, initializer=search_on_one_core
            )
        return self._batchers[embedder]

    def _slow_down(self, user: User) -> Notice:
        wait = self.rate_limiter.retry_after(user.key)
        return Notice(
            "rate_limited",
            f"You are asking faster than I can keep up with. Please try again in {wait} s.",
        )

    async def more(
        self, user: User, question_id: int, offset: int, working: Working | None = None
    ) -> AnswerReply | Notice | Quiet:
        """The next passages for a stored question: what a More button asks for."""
        asked = await self.store.question(question_id)
        if asked is None:
            return Notice("expired", EXPIRED)
        reply = await self.ask(
            user, asked.text, asked.area_filter, offset, working=working, language=asked.language
        )
        if isinstance(reply, AnswerReply) and reply.answer.answered and not reply.answer.hits:
            return Notice("usage", NOTHING_MORE)  # past the last page (an old or forged button)
        if isinstance(reply, AnswerReply):
            return AnswerReply(reply.answer, question_id, reply.disclaimer)
        return reply

    async def sources(
        self, user: User, question_id: int, offset: int = 0
    ) -> tuple[Passage, ...] | Notice:
        """The passages an answer cited, in full: what a Sources button shows. A press is a
        search like a question, so it counts toward the same rate limit."""
        if self.rate_limiter.check(user.key) != "allow":
            return self._slow_down(user)
        asked = await self.store.question(question_id)
        if asked is None:
            return Notice("expired", EXPIRED)
        text, _, area = self.retriever.prepare(asked.text, asked.area_filter)
        answer, _ = await self._search(text, area, offset, language=asked.language)
        if not answer.hits:
            return Notice("usage", NOTHING_MORE)
        return tuple(hit.passage for hit in answer.hits)

    async def vote(self, user: User, question_id: int, helpful: bool) -> Notice:
        """One helpful / not helpful vote per person per answer, kept for moderators."""
        if await self.store.record_vote(question_id, user.key, helpful):
            log.info("feedback helpful=%s question=%s", helpful, question_id)
            metrics.record_vote(helpful)
            return Notice("feedback", "Thank you for your feedback!")
        if await self.store.question(question_id) is None:
            return Notice("expired", EXPIRED)
        return Notice("feedback", "You already rated this answer.")

    # -- browsing -------------------------------------------------------------------------

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

    def help(self, moderator: bool = False) -> HelpReply:
        """What anyone can do; a moderator also reads the moderators' commands, which menus
        do not advertise."""
        intro = (
            "I answer questions about managing intellectual property in research and innovation "
            "with cited passages from the EU Code of Practice on the management of intellectual "
            "assets for knowledge valorisation and related EU guidance. Ask in plain words. "
            "Subscribe to get news of the Code of Practice in this chat."
        )
        return HelpReply(intro, COMMANDS if moderator else public_commands(), EXAMPLE_QUESTION)

    def about(self, moderator: bool = False) -> AboutReply:
        """What is served; moderators also see why the corpus on disk is not (if it is not)."""
        corpus = self.retriever.corpus
        index = self.retriever.index
        problems = tuple(str(p) for p in self.retriever.problems) if moderator else ()
        return AboutReply(
            corpus_version=corpus.version,
            corpus_hash=corpus.hash[:12],
            indexed_at=index.manifest.built_at,
            passages=len(corpus.passages),
            model=index.manifest.model,
            problems=problems,
        )

    # -- commands -------------------------------------------------------------------------

    def is_moderator(self, context: Context) -> bool:
        """Listed in IPBOT_MODERATORS by user id, or holding a listed Discord role; the
        console's user is whoever runs ipbot on this machine, who can edit its files anyway."""
        if context.user.platform == "console":
            return True
        roles = {f"{context.user.platform}-role:{role}" for role in context.roles}
        return context.user.key in self.moderators or bool(roles & self.moderators)

    async def allowed(self, context: Context, command: Command) -> bool:
        """The one place that decides who may run a command."""
        if command.audience == Audience.MODERATORS:
            return self.is_moderator(context)
        if command.audience == Audience.CHAT_ADMINS and not context.chat.is_private:
            return self.is_moderator(context) or await context.is_chat_admin()
        return True

    async def handle(self, context: Context, text: str, working: Working | None = None) -> Reply:
        """A line typed by a user: a /command or, otherwise, a question.

        Control characters and lone surrogates are removed first: a reply that echoes them
        (an unknown command, an unknown area) could not even be encoded to be sent.
        """
        stripped = printable(text).strip()
        if not stripped.startswith("/") and self.suggestions.waiting(context):
            return await self.suggestions.reply(context, stripped)
        if not stripped.startswith("/"):
            return await self.ask(
                context.user, stripped, working=working, conversation=context.conversation
            )
        name, _, rest = stripped[1:].partition(" ")
        name = name.split("@", 1)[0]  # Telegram appends @botname in groups
        command = find(name)
        if command is None:
            return Notice(
                "unknown_command", f"I don't know /{name}. Type /help to see what I can do."
            )
        if not await self.allowed(context, command):
            log.warning(
                "refused /%s to %s in a %s chat",
                command.name,
                context.user.platform,
                context.chat.kind,
            )
            who = (
                "this chat's administrators"
                if command.audience == Audience.CHAT_ADMINS
                else "moderators"
            )
            return Notice("refused", REFUSED.format(who=who, name=command.name))
        return await self.run(context, command, rest.strip(), working)

    async def run(
        self, context: Context, command: Command, rest: str, working: Working | None = None
    ) -> Reply:
        """Run an allowed command with the text typed after it."""
        dissemination = self.dissemination
        match command.name:
            case "ask":
                if not rest:
                    return Notice(
                        "usage", f"Type your question after /ask, e.g. /ask {EXAMPLE_QUESTION}"
                    )
                return await self.ask(
                    context.user, rest, working=working, conversation=context.conversation
                )
            case "areas":
                return self.areas()
            case "area":
                return self.browse(rest)
            case "help":
                return self.help(self.is_moderator(context))
            case "about":
                return self.about(self.is_moderator(context))
            case "subscribe":
                return await dissemination.subscribe(context.chat, rest)
            case "unsubscribe":
                return await dissemination.unsubscribe(context.chat, rest)
            case "subscriptions":
                return await dissemination.describe(context.chat)
            case "updates":
                return dissemination.latest(rest)
            case "forget":
                return await dissemination.forget(context.user, context.chat)
            case "announce":
                return await dissemination.preview(rest)
            case "stats" | "gaps":
                return await self.moderator_report(context, command.name, rest)
            case "versions":
                return await self.list_versions(context)
            case "reload" | "promote" | "rollback":
                return await self.refresh(context, command.name, rest, working)
            case "suggest":
                return self.suggestions.start(context)
            case "cancel":
                return self.suggestions.cancel(context)
            case "queue":
                return await self.suggestions.queue(context)
        raise AssertionError(f"/{command.name} is registered but not handled")

    async def moderator_report(self, context: Context, name: str, rest: str) -> Notice:
        """/stats or /gaps over the last DAYS days (30 unless given), written to the audit log;
        a DAYS that is no number of days is refused, not replaced by 30 without a word."""
        rest = rest.strip()
        if rest and not (rest.isdigit() and 0 < int(rest) <= MAX_DAYS):
            return Notice(
                "usage",
                f"Say how many days to look back, from 1 to {MAX_DAYS}, e.g. /{name} 7 "
                f"(or nothing for {DEFAULT_DAYS}).",
            )
        days = int(rest) if rest else DEFAULT_DAYS
        if name == "stats":
            text = await self.moderation.stats(days)
        else:
            text = await self.moderation.gaps_text(days)
        await self.store.audit(context.user.key, name, f"{days} days", "shown")
        return Notice(name, text)

    async def refresh(
        self, context: Context, action: str, rest: str, working: Working | None = None
    ) -> RefreshReply | Notice:
        """/reload, /promote N or /rollback: queued for the refresh worker, then its summary."""
        if self.refresher is None:
            return Notice("error", "Corpus refresh is not available in this mode.")
        if working is not None:
            await working()
        request = await self.refresher.request(action, rest.strip(), context.user.key)
        if request.status == "withdrawn":
            return Notice(
                "refresh",
                "No running bot took this request in time, so nothing changed. Try again.",
            )
        if request.status not in ("done", "failed"):
            return Notice(
                "refresh",
                "This is taking longer than expected; it goes on in the background. "
                "See /versions in a while.",
            )
        items = self.dissemination.items
        offers = tuple((items[u].title, announce_token(u)) for u in request.offers if u in items)
        return RefreshReply(request.result, request.status == "done", offers)

    async def list_versions(self, context: Context) -> Notice:
        if self.refresher is None:
            return Notice("error", "Corpus versions are not available in this mode.")
        await self.store.audit(context.user.key, "versions", "", "shown")
        return Notice("versions", await versions_text(self.store))

    async def handle_text(self, user: User, text: str, working: Working | None = None) -> Reply:
        """A line typed in a private chat (the console's and the tests' way in)."""
        return await self.handle(Context.private(user), text, working)

    async def announce_choice(self, context: Context, token: str, confirm: bool) -> Notice:
        """Confirm (publish, and report here) or Cancel under an announcement preview. Only a
        moderator's press counts: anyone else's is refused (kind "refused") and must change
        nothing, so that the moderator can still confirm."""
        if not self.is_moderator(context):
            return Notice("refused", REFUSED.format(who="moderators", name="announce"))
        if not confirm:
            return Notice("cancelled", "Cancelled: nothing was announced.")
        return await self.dissemination.publish(token, context.user.key, context.chat)

    async def follow(self, user: User, question_id: int) -> Notice:
        """ "Tell me when this is covered" under an abstention: opt-in, once per person."""
        return await request_coverage(self.store, user, question_id)

    async def decide(self, context: Context, suggestion_id: int, accept: bool) -> Notice:
        """Accept or Reject under /queue (moderators only); Reject asks for a reason first."""
        if not self.is_moderator(context):
            return Notice("refused", REFUSED.format(who="moderators", name="queue"))
        if accept:
            return await self.suggestions.accept(context, suggestion_id)
        return self.suggestions.ask_reason(context, suggestion_id)


def retriever_corpus_dir() -> Path:
    """Where drafts go when no corpus folder is given: this checkout's corpus."""
    return Path(__file__).resolve().parent.parent / "corpus"


def configured_retriever(
    settings: Settings, progress: Progress = lambda _msg: None, gated: bool = False
) -> Retriever:
    """Corpus, model and index as the settings say, ready to answer (`gated`: see
    `open_retriever`; only a bot with a refresh worker can check a changed corpus)."""
    return open_retriever(
        settings.corpus_dir,
        settings.data_dir,
        settings.model,
        settings.index_type,
        settings.policy,
        progress,
        settings.multilingual,
        settings.int8,
        gated,
    )
