"""The composition root: settings → store → retriever → assistant → outlets and sender.

Every long-lived part is built here and handed its collaborators; nothing else opens the
database or loads the model. `ipbot run`, `ipbot chat` and the tests all start from `open_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from bot.assistant import Assistant, configured_retriever
from bot.coverage import answers_from, notify_covered
from bot.leadership import while_leading
from bot.refresh import Refresher
from bot.sender import Outlet, Sender
from bot.settings import Settings
from bot.store import Store, StoreError, open_store
from bot.subscriptions import Dissemination, refresh_feeds
from bot.suggestions import Suggestions
from retrieval.index import Progress
from retrieval.search import Retriever
from retrieval.versions import Build

log = logging.getLogger(__name__)
SEEN_UPDATES_KEPT = dt.timedelta(days=1)  # platforms redeliver an update within minutes


@dataclass
class App:
    """The parts of a running ipbot, wired together."""

    settings: Settings
    store: Store
    retriever: Retriever
    assistant: Assistant
    sender: Sender | None = None
    outlets: list[Outlet] = field(default_factory=list)
    refresher: Refresher | None = None
    sending: asyncio.Event = field(default_factory=asyncio.Event)  # set: stop sending

    def stop_sending(self) -> None:
        """Stop claiming broadcasts; sends in flight finish and are recorded."""
        self.sending.set()
        if self.sender is not None:
            self.sender.stop()

    def wake_sender(self) -> None:
        """Something was published in this process: deliver it now, not at the next poll."""
        if self.sender is not None:
            self.sender.wake()

    @property
    def dissemination(self) -> Dissemination:
        return self.assistant.dissemination


def configured_outlets(settings: Settings) -> list[Outlet]:
    """The sending side of every platform with a token; imported only when used."""
    outlets: list[Outlet] = []
    if settings.telegram_token:
        from bot.telegram import TelegramOutlet

        outlets.append(TelegramOutlet(settings))
    if settings.discord_token:
        from bot.discord import DiscordOutlet

        outlets.append(DiscordOutlet(settings))
    return outlets


async def open_app(
    settings: Settings, progress: Progress = lambda _msg: None, outlets: list[Outlet] | None = None
) -> App:
    """Open the store (migrating it), load corpus, model and index, and wire the assistant."""
    store = await open_store(settings.database, attempts=5)
    try:
        retriever = await asyncio.to_thread(configured_retriever, settings, progress, True)
    except BaseException:
        await store.close()
        raise
    app = App(settings, store, retriever, assistant=None)  # type: ignore[arg-type]
    feeds = settings.data_dir / "feeds" if settings.feeds else None
    dissemination = Dissemination(
        store, retriever, feeds, on_publish=app.wake_sender, dm_limit=settings.discord_dm_limit
    )

    async def after_swap(build: Build) -> str | None:
        """A new version is served: the feeds follow its updates, and whoever asked to be told
        when their unanswered question is covered gets the new answer, once."""
        if feeds is not None:
            await refresh_feeds(store, feeds, build.corpus)
        covered = await notify_covered(store, answers_from(retriever, settings.top_k))
        if covered.answered:
            app.wake_sender()
        if not covered.open:
            return None
        return (
            f"Open unanswered questions that people asked to be told about: {covered.open}; "
            f"now answered: {covered.answered} (they are told)."
        )

    app.refresher = Refresher(
        store, retriever, settings.corpus_dir, settings.eval_file, on_swap=after_swap
    )
    app.assistant = Assistant(
        retriever,
        store,
        top_k=settings.top_k,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        moderators=frozenset(settings.moderators),
        dissemination=dissemination,
        refresher=app.refresher,
        suggestions=Suggestions(store, retriever, settings.corpus_dir, on_notice=app.wake_sender),
    )
    try:
        await app.refresher.start()
        if feeds is not None:
            await refresh_feeds(store, feeds, retriever.corpus)
        if outlets:
            app.outlets = outlets
            app.sender = Sender(store, outlets, retriever.corpus.areas)
        await ensure_outlet_subscriptions(app)
        await purge_old_questions(app)
    except (SQLAlchemyError, OSError) as exc:  # e.g. a read-only SQLite file with its journal
        await store.close()
        raise StoreError(start_failure(exc)) from None
    return app


def start_failure(exc: Exception) -> str:
    """One line on what failed at start: the database, or a file ipbot writes beside it (the
    news feeds in the data folder), which must not send the operator to the database."""
    if isinstance(exc, OSError) and exc.filename:
        return (
            f"cannot write {exc.filename} at start: {exc.strerror}; check that the data folder "
            "(IPBOT_DATA_DIR) is writable by ipbot"
        )
    reason = getattr(exc, "orig", None) or exc  # the driver's words, not the SQL sent
    return f"cannot use the database at start: {reason}"


async def purge_old_questions(app: App) -> None:
    """Questions are kept for the retention period only (IPBOT_QUESTION_RETENTION_DAYS)."""
    days = dt.timedelta(days=app.settings.question_retention_days)
    purged = await app.store.purge_questions(days)
    if purged:
        log.info("deleted %d questions older than %d days", purged, days.days)


async def housekeeping(app: App, every: float = 3600.0) -> None:
    """Jobs that run while the bot runs, hourly: the retention purge, old update ids."""
    while True:
        await asyncio.sleep(every)
        try:
            await purge_old_questions(app)
            await app.store.forget_seen(SEEN_UPDATES_KEPT)
        except Exception:
            log.exception("housekeeping failed; trying again later")


async def ensure_outlet_subscriptions(app: App) -> None:
    """Configured channels (a Telegram channel, a Discord announcement channel) get every update."""
    settings = app.settings
    if settings.telegram_channel and settings.telegram_token:
        await app.store.subscribe("telegram", settings.telegram_channel, "channel", None)
    if settings.discord_announcement_channel and settings.discord_token:
        channel = str(settings.discord_announcement_channel)
        await app.store.subscribe("discord", channel, "announcement", None)


@contextlib.asynccontextmanager
async def running_sender(app: App) -> AsyncIterator[None]:
    """Deliver the outbox, handle corpus refreshes and keep house in the background.

    On exit, sends in flight finish, and a refresh being built is abandoned (the live
    version was never touched; the request is marked failed at the next start).
    """
    chores = [asyncio.create_task(housekeeping(app), name="housekeeping")]
    if app.refresher is not None:
        chores.append(asyncio.create_task(app.refresher.run(), name="refresh"))
    task = None
    if app.sender is not None:
        sending = while_leading(app.store, "sender", app.sender.run_until, app.sending)
        task = asyncio.create_task(sending, name="sender")
    try:
        yield
    finally:
        if app.refresher is not None:
            app.refresher.stop()
        for chore in chores:
            chore.cancel()
        if task is not None:
            app.stop_sending()
            with contextlib.suppress(Exception):
                await task


async def close_app(app: App) -> None:
    await app.store.close()
