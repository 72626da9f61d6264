"""Community suggestions: /suggest, a short guided exchange in a private chat, and /queue,
where moderators accept one as a draft passage under corpus/drafts/ or reject it with a reason."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import yaml

from bot.replies import Context, Notice, SuggestionQueue
from bot.sender import PersonalMessage
from bot.store import Store, Suggestion
from retrieval.corpus import AREA_PREFIXES, DRAFTS_DIR, Area, Corpus, check_draft
from retrieval.search import Retriever

log = logging.getLogger(__name__)

EXCHANGE_SECONDS = 15 * 60  # an unfinished exchange is forgotten after this
MAX_EXCHANGES = 10_000
KINDS = {"1": "example", "2": "correction", "3": "source"}
KIND_WORDS = {"example": "a practical example", "correction": "a correction", "source": "a source"}
YES, NO = {"yes", "y", "ok", "sure"}, {"no", "n"}
SKIP = {"skip", "no", "none", "-"}
MIN_TEXT, MAX_TEXT = 20, 2000
START = (
    "Thank you for helping to improve ipbot! What would you like to suggest?\n"
    "1 – a practical example\n2 – a correction to a passage\n3 – a source\n"
    "Reply with 1, 2 or 3. /cancel stops at any time."
)
PRIVATE_ONLY = (
    "Please send /suggest to me in a private chat (on Discord, a direct message), "
    "so your suggestion stays between you and the moderators."
)


@dataclass(frozen=True)
class Exchange:
    """Where one person is in /suggest, or which suggestion a moderator is rejecting."""

    step: str  # kind, passage, text, url, consent; or reason (a moderator's)
    expires: float
    kind: str = ""
    passage_id: str | None = None
    text: str = ""
    url: str | None = None
    suggestion_id: int = 0


class Exchanges:
    """Open exchanges by user, each forgotten after a while; one user's never touches another's."""

    def __init__(
        self, seconds: float = EXCHANGE_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self.seconds, self._clock = seconds, clock
        self._open: dict[str, Exchange] = {}

    def get(self, key: str) -> Exchange | None:
        exchange = self._open.get(key)
        if exchange is not None and exchange.expires < self._clock():
            del self._open[key]
            return None
        return exchange

    def put(self, key: str, exchange: Exchange) -> None:
        if len(self._open) >= MAX_EXCHANGES:
            now = self._clock()
            self._open = {k: e for k, e in self._open.items() if e.expires >= now}
        self._open[key] = replace(exchange, expires=self._clock() + self.seconds)

    def end(self, key: str) -> bool:
        return self._open.pop(key, None) is not None


def valid_url(text: str) -> bool:
    parsed = urlparse(text)
    return (
        parsed.scheme in ("http", "https")
        and "." in parsed.netloc
        and not re.search(r"\s", text)
        and len(text) <= 500
    )


class Suggestions:
    """What community members suggest and what moderators decide, whatever the platform."""

    def __init__(
        self,
        store: Store,
        retriever: Retriever,
        corpus_dir: Path,
        on_notice: Callable[[], None] = lambda: None,
    ):
        self.store, self.retriever, self.corpus_dir = store, retriever, corpus_dir
        self.on_notice = on_notice  # wakes the sender in this process
        self.exchanges = Exchanges()

    # -- /suggest ---------------------------------------------------------------------------

    def waiting(self, context: Context) -> bool:
        """Whether this message belongs to its author's exchange: a /suggest exchange runs in a
        private chat (a question asked meanwhile in a group is a question), while the reason a
        moderator was asked for after Reject may come wherever they pressed it."""
        exchange = self.exchanges.get(context.user.key)
        if exchange is None:
            return False
        return context.chat.is_private or exchange.step == "reason"

    def start(self, context: Context) -> Notice:
        if not context.chat.is_private:
            return Notice("usage", PRIVATE_ONLY)
        self.exchanges.put(context.user.key, Exchange("kind", 0.0))
        return Notice("suggest", START)

    def cancel(self, context: Context) -> Notice:
        if self.exchanges.end(context.user.key):
            return Notice("suggest", "Stopped. Nothing was kept.")
        return Notice("suggest", "There is nothing to stop.")

    async def reply(self, context: Context, text: str) -> Notice:
        """The next message of an exchange: each step checks it, and bad input changes nothing."""
        key = context.user.key
        exchange = self.exchanges.get(key)
        if exchange is None:
            return Notice(
                "expired", "That took a while, so I stopped. Send /suggest to start again."
            )
        text = text.strip()
        match exchange.step:
            case "kind":
                return self._kind(key, exchange, text)
            case "passage":
                return self._passage(key, exchange, text)
            case "text":
                return self._text(key, exchange, text)
            case "url":
                return self._url(key, exchange, text)
            case "consent":
                return await self._consent(context, exchange, text)
            case _:
                return await self._reason(context, exchange, text)

    def _kind(self, key: str, exchange: Exchange, text: str) -> Notice:
        kind = KINDS.get(text.rstrip(".")) or (text.lower() if text.lower() in KIND_WORDS else "")
        if not kind:
            return Notice("usage", "Please reply with 1, 2 or 3 (or /cancel).")
        if kind == "correction":
            self.exchanges.put(key, replace(exchange, step="passage", kind=kind))
            return Notice(
                "suggest",
                "Which passage needs correcting? Send its ID, for example VAL-R1 "
                "(the Sources button under an answer shows IDs).",
            )
        self.exchanges.put(key, replace(exchange, step="text", kind=kind))
        return Notice("suggest", f"Please write {KIND_WORDS[kind]} in a few sentences.")

    def _passage(self, key: str, exchange: Exchange, text: str) -> Notice:
        passage = self.retriever.corpus.by_id.get(text.upper())
        if passage is None:
            return Notice(
                "usage",
                f"I have no passage “{text[:40]}”. IDs look like VAL-R1; the Sources button "
                "under an answer shows them.",
            )
        self.exchanges.put(key, replace(exchange, step="text", passage_id=passage.id))
        return Notice(
            "suggest", f"“{passage.title}”: please write what should change, in a few sentences."
        )

    def _text(self, key: str, exchange: Exchange, text: str) -> Notice:
        if len(text) < MIN_TEXT:
            return Notice("usage", "A few more words, please (at least 20 characters).")
        if len(text) > MAX_TEXT:
            return Notice("usage", "Please keep it under 2,000 characters.")
        self.exchanges.put(key, replace(exchange, step="url", text=text))
        return Notice(
            "suggest", "A link to where this can be checked (starting with https://), or “skip”."
        )

    def _url(self, key: str, exchange: Exchange, text: str) -> Notice:
        url = None if text.lower() in SKIP else text
        if url is not None and not valid_url(url):
            return Notice(
                "usage",
                "That does not look like a web address. Send one starting with https://, or “skip”.",
            )
        self.exchanges.put(key, replace(exchange, step="consent", url=url))
        return Notice(
            "suggest", "May I tell you what the moderators decide, in a private message? yes / no"
        )

    async def _consent(self, context: Context, exchange: Exchange, text: str) -> Notice:
        answer = text.lower().rstrip(".!")
        if answer not in YES | NO:
            return Notice("usage", "Please answer yes or no.")
        user = context.user
        contact = user.id if answer in YES else None
        number = await self.store.add_suggestion(
            user.platform, contact, exchange.kind, exchange.passage_id, exchange.text, exchange.url
        )
        self.exchanges.end(user.key)
        told = " I will tell you what they decide." if contact else ""
        return Notice(
            "suggest", f"Thank you! Your suggestion #{number} is in the moderators' queue.{told}"
        )

    # -- /queue -----------------------------------------------------------------------------

    async def queue(self, context: Context) -> SuggestionQueue | Notice:
        open_ = await self.store.open_suggestions()
        await self.store.audit(context.user.key, "queue", "", f"{len(open_)} shown")
        if not open_:
            return Notice("queue", "No suggestions are waiting.")
        return SuggestionQueue(tuple(open_))

    async def accept(self, context: Context, suggestion_id: int) -> Notice:
        """Write the suggestion as a draft passage file, and show what to fix before it goes in."""
        found = await self.store.suggestion(suggestion_id)
        if found is None or found.status != "open":
            return Notice("usage", f"Suggestion #{suggestion_id} is not waiting any more.")
        corpus = self.retriever.corpus
        area = await self._area_of(found, corpus)
        path = self.corpus_dir / DRAFTS_DIR / f"suggestion-{found.id}-{area.slug}.md"
        shown = path.relative_to(self.corpus_dir).as_posix()
        decided = await self.store.decide_suggestion(  # first: of two moderators, one wins
            found.id, "accepted", context.user.key, draft=shown
        )
        if decided is None:  # another moderator decided meanwhile (and writes the draft)
            return Notice("usage", f"Suggestion #{suggestion_id} is not waiting any more.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(draft_file(found, corpus, area), encoding="utf-8")
        except OSError as exc:
            log.error("suggestion #%s: the draft could not be written: %r", found.id, exc)
            return Notice(
                "accepted",
                f"Accepted #{found.id}, but its draft could not be written ({exc.strerror}); "
                "the suggestion's text is kept in the database.",
            )
        problems = [
            f"{shown}:{p.line}: {p.message}"
            for p in check_draft(path, corpus, replaces=found.passage_id)
        ]
        await self.store.audit(context.user.key, "accept", f"#{found.id}", shown)
        await self._tell(decided, "Good news: the moderators accepted your suggestion "
                         f"#{found.id}. It is now a draft for the corpus.")  # fmt: skip
        todo = "\n".join(problems) if problems else "No problems found."
        todo += f"\nWrite it in our own words, check it against its source, then move it into {area.slug}.md."
        return Notice("accepted", f"Accepted #{found.id}. Draft: {shown}\n{todo}")

    def ask_reason(self, context: Context, suggestion_id: int) -> Notice:
        self.exchanges.put(context.user.key, Exchange("reason", 0.0, suggestion_id=suggestion_id))
        return Notice(
            "suggest",
            f"Why is #{suggestion_id} rejected? Send one line as your next message to me "
            "(or /cancel). The proposer reads it if they asked to be told.",
        )

    async def _reason(self, context: Context, exchange: Exchange, text: str) -> Notice:
        reason = " ".join(text.splitlines()[0].split())[:300] if text else ""
        if not reason:
            return Notice("usage", "Please send the reason as one line of text.")
        self.exchanges.end(context.user.key)
        number = exchange.suggestion_id
        decided = await self.store.decide_suggestion(number, "rejected", context.user.key, reason)
        if decided is None:
            return Notice("usage", f"Suggestion #{number} is not waiting any more.")
        await self.store.audit(context.user.key, "reject", f"#{number}", reason)
        await self._tell(
            decided,
            f"Thank you for your suggestion #{number}. The moderators decided not to use it: "
            f"{reason}",
        )
        return Notice("rejected", f"Rejected #{number}.")

    async def _tell(self, suggestion: Suggestion, text: str) -> None:
        """The proposer hears the outcome only if they agreed to be contacted."""
        if suggestion.contact is None:
            return
        stored = PersonalMessage("suggestion", text).stored()
        key = f"suggestion:{suggestion.id}:{suggestion.status}"
        await self.store.enqueue_notice(
            suggestion.platform, suggestion.contact, "suggestion", stored, key
        )
        self.on_notice()

    async def _area_of(self, suggestion: Suggestion, corpus: Corpus) -> Area:
        """A correction's passage's area; otherwise the area nearest the text."""
        if suggestion.passage_id in corpus.by_id:
            return corpus.area(corpus.by_id[suggestion.passage_id].area)
        answer = await asyncio.to_thread(self.retriever.answer, suggestion.text)
        nearest = answer.area or next(iter(answer.suggestions), None)
        return nearest or corpus.areas[0]


def next_free_id(corpus: Corpus, area: Area, letter: str) -> str:
    prefix = f"{AREA_PREFIXES[area.slug]}-{letter}"
    used = [
        int(p.id[len(prefix) :]) for p in corpus.passages if re.fullmatch(rf"{prefix}\d+", p.id)
    ]
    return f"{prefix}{max(used, default=0) + 1}"


def draft_file(suggestion: Suggestion, corpus: Corpus, area: Area) -> str:
    """The suggestion in the corpus format; what was not given is left out for the moderator
    to add (validation names it)."""
    fields: list[str] = []
    if suggestion.kind == "correction" and suggestion.passage_id in corpus.by_id:
        passage = corpus.by_id[suggestion.passage_id]
        heading = f"{passage.id}: {passage.title}"
        fields += [f"kind: {passage.kind}", f"source: {passage.citation}"]
        fields.append(f"url: {suggestion.url or passage.url}")
    else:
        letter = "E" if suggestion.kind == "example" else "R"
        heading = f"{next_free_id(corpus, area, letter)}: Suggested {suggestion.kind}"
        if suggestion.kind == "example":
            fields.append("kind: example")
        if suggestion.url:
            fields.append(f"url: {suggestion.url}")
    # one line of the person's text, never a heading of its own ("## VAL-R1: ...")
    text = " ".join(suggestion.text.split()).lstrip("#").strip()
    about = {"slug": area.slug, "title": area.title, "description": area.description}
    front_matter = yaml.safe_dump(about, sort_keys=False, allow_unicode=True, width=10_000)
    return f"---\n{front_matter}---\n\n## {heading}\n" + "\n".join(fields) + f"\n\n{text}\n"
