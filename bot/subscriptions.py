"""Dissemination: subscriptions, the latest updates, publishing to the outbox, and /forget.

Platform-agnostic like the assistant; delivery itself is the sender's job (bot/sender.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from bot.feeds import write_feeds
from bot.replies import AnnouncePreview, Chat, Notice, UpdatesReply, User
from bot.sender import UpdateItem, published_items
from bot.store import Store, Subscription
from retrieval.corpus import Area, Corpus, Update
from retrieval.search import Retriever, UserInputError

log = logging.getLogger(__name__)
LATEST = 5
DIGEST_WORDS = {"weekly", "digest"}
IMMEDIATE_WORDS = {"instant", "immediate", "immediately"}


def update_items(corpus: Corpus) -> dict[str, UpdateItem]:
    """The corpus's updates as subscribers read them, by id."""
    areas = {a.slug: a for a in corpus.areas}
    return {u.id: _item(u, areas) for u in corpus.updates}


def _item(update: Update, areas: dict[str, Area]) -> UpdateItem:
    return UpdateItem(
        update.id,
        update.date,
        update.title,
        update.body,
        update.url,
        tuple(areas[s] for s in update.areas if s in areas),
    )


def announce_token(update_id: str) -> str:
    return hashlib.sha256(update_id.encode()).hexdigest()[:12]


async def publish_update(
    store: Store, item: UpdateItem, actor: str, feeds: tuple[Path, Corpus] | None = None
) -> int | None:
    """Queue an update for its subscribers (once); None if it was already published."""
    queued = await store.publish(
        item.id,
        item.date,
        item.title,
        item.body,
        item.url,
        (a.slug for a in item.areas),
        actor,
    )
    result = "already published" if queued is None else f"queued for {queued} chats"
    await store.audit(actor, "publish", item.id, result)
    if queued is not None and feeds is not None:
        await refresh_feeds(store, *feeds)
    return queued


async def refresh_feeds(store: Store, folder: Path, corpus: Corpus) -> None:
    """Rewrite the Atom feeds from what has been published."""
    write_feeds(folder, await published_items(store, corpus.areas))


class Dissemination:
    """What community members and moderators do with updates, whatever the platform."""

    def __init__(
        self,
        store: Store,
        retriever: Retriever,
        feeds_dir: Path | None = None,
        on_publish: Callable[[], None] = lambda: None,
        dm_limit: int = 1000,
    ):
        self.store, self.retriever = store, retriever
        self.feeds_dir = feeds_dir
        self.dm_limit = dm_limit  # Discord quarantines bots that open many DMs
        self.on_publish = on_publish  # wakes the sender in this process
        self._items: tuple[Corpus | None, dict[str, UpdateItem]] = (None, {})

    @property
    def items(self) -> dict[str, UpdateItem]:
        """The served corpus's updates, kept per corpus served (not per corpus hash, which
        leaves updates out: a new update file alone makes a new version to announce from)."""
        corpus = self.retriever.corpus
        if self._items[0] is not corpus:
            self._items = (corpus, update_items(corpus))
        return self._items[1]

    def _all_slugs(self) -> list[str]:
        return [a.slug for a in self.retriever.corpus.areas]

    def parse_areas(self, text: str) -> list[Area]:
        """Areas named by slug, prefix or title; separated by commas or spaces."""
        text = text.strip()
        if not text:
            return []
        if "," not in text:
            try:
                return [self.retriever.resolve_area(text)]
            except UserInputError:
                pieces = text.split()
        else:
            pieces = [p for p in text.split(",") if p.strip()]
        return [self.retriever.resolve_area(piece) for piece in pieces]

    def _options(self, text: str) -> tuple[str, bool | None]:
        """The text without the delivery words, and weekly (True), immediate (False) or unsaid."""
        words, digest = [], None
        for word in text.replace(",", " , ").split():
            if word.lower() in DIGEST_WORDS:
                digest = True
            elif word.lower() in IMMEDIATE_WORDS:
                digest = False
            else:
                words.append(word)
        return " ".join(words).replace(" , ", ",").strip(" ,"), digest

    async def subscribe(self, chat: Chat, text: str) -> Notice:
        text, digest = self._options(text)
        try:
            areas = self.parse_areas(text)
        except UserInputError as exc:
            return Notice("usage", str(exc))
        current = await self.store.subscription(chat.platform, chat.id)
        if chat.kind == "dm" and (current is None or not current.active) and await self._dms_full():
            return Notice(
                "usage",
                "Direct-message subscriptions are full. Subscribe a channel instead, or "
                "follow the updates' Atom feed.",
            )
        if digest is None:
            digest = current.digest if current is not None and current.active else False
        subscription = await self.store.subscribe(
            chat.platform, chat.id, chat.kind, [a.slug for a in areas] if areas else None, digest
        )
        return Notice("subscribed", "Subscribed. " + self._summary(subscription))

    async def _dms_full(self) -> bool:
        return await self.store.count_subscriptions("discord", "dm") >= self.dm_limit

    async def unsubscribe(self, chat: Chat, text: str) -> Notice:
        try:
            areas = self.parse_areas(self._options(text)[0])
        except UserInputError as exc:
            return Notice("usage", str(exc))
        current = await self.store.subscription(chat.platform, chat.id)
        if current is None or not current.active:
            return Notice("unsubscribed", "This chat is not subscribed. /subscribe to get news.")
        left = await self.store.unsubscribe(
            chat.platform, chat.id, [a.slug for a in areas] or None, self._all_slugs()
        )
        if left is None:
            return Notice("unsubscribed", "Unsubscribed: this chat will get no more news from me.")
        return Notice("unsubscribed", "Unsubscribed from those areas. " + self._summary(left))

    async def describe(self, chat: Chat) -> Notice:
        current = await self.store.subscription(chat.platform, chat.id)
        if current is None:
            return Notice("subscriptions", "This chat has no subscription. /subscribe to get news.")
        if not current.active:
            return Notice(
                "subscriptions",
                "News to this chat stopped because I could not deliver it. /subscribe to restart.",
            )
        return Notice("subscriptions", self._summary(current))

    def _summary(self, subscription: Subscription) -> str:
        corpus = self.retriever.corpus
        if subscription.areas is None:
            what = "news from all areas"
        else:
            what = "news about " + ", ".join(corpus.area(s).title for s in subscription.areas)
        when = (
            "in a weekly digest (Mondays)" if subscription.digest else "as soon as it is published"
        )
        return (
            f"This chat receives {what}, {when}. "
            "Change with /subscribe AREA, /subscribe weekly, /unsubscribe [AREA]."
        )

    def latest(self, text: str) -> UpdatesReply | Notice:
        area = None
        if text.strip():
            try:
                area = self.retriever.resolve_area(text)
            except UserInputError as exc:
                return Notice("usage", str(exc))
        today = dt.date.today()  # an update dated later is staged: not news before its day
        items = [
            i for i in self.items.values() if i.date <= today and (area is None or area in i.areas)
        ]
        items.sort(key=lambda i: (i.date, i.id), reverse=True)
        return UpdatesReply(tuple(items[:LATEST]), area)

    async def forget(self, user: User, chat: Chat) -> Notice:
        removed = await self.store.forget(user.platform, user.key, [user.id])
        log.info("forget: %d records deleted", removed)
        return Notice(
            "forgotten",
            "Done. I deleted your own subscription, your votes, your requests to be told when "
            "a question is covered, the messages kept for you, and your contact on suggestions, "
            "if there were any. "
            "Questions are kept without who asked them, so nothing else links to you. "
            "Group and channel subscriptions belong to their chat: an administrator can "
            "/unsubscribe them.",
        )

    def find_update(self, text: str) -> UpdateItem | None:
        """An update by file name (with or without .md), path, or announce token."""
        key = Path(text.strip()).name.removesuffix(".md")
        if key in self.items:
            return self.items[key]
        return next((i for i in self.items.values() if announce_token(i.id) == key), None)

    async def preview(self, text: str) -> AnnouncePreview | Notice:
        item = self.find_update(text)
        if item is None:
            newest = sorted(self.items.values(), key=lambda i: i.date, reverse=True)[:5]
            names = ", ".join(i.id for i in newest)
            return Notice(
                "usage",
                f"Name an update file from corpus/updates/, e.g. /announce {names.split(', ')[0] if names else 'FILE'}. Newest: {names}.",
            )
        subscribers = wanted_by(await self.store.subscriptions(), item)
        already = await self.store.is_published(item.id)
        return AnnouncePreview(item, announce_token(item.id), subscribers, already)

    async def publish(self, token: str, actor: str, report_chat: Chat) -> Notice:
        item = self.find_update(token)
        if item is None:
            return Notice("usage", "That update is no longer in the corpus.")
        feeds = (self.feeds_dir, self.retriever.corpus) if self.feeds_dir else None
        queued = await publish_update(self.store, item, actor, feeds)
        if queued is None:
            return Notice(
                "published", f"“{item.title}” was already published; nothing was sent again."
            )
        chat = report_chat
        await self.store.set_report(item.id, chat.platform, chat.id, None, kind=chat.kind)
        self.on_publish()
        return Notice(
            "published",
            f"Publishing “{item.title}” to {queued} chats. A delivery report follows here.",
        )


def wanted_by(subscriptions: Iterable[Subscription], item: UpdateItem) -> int:
    return sum(s.wants(a.slug for a in item.areas) for s in subscriptions)
