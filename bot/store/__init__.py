"""The store: the one place that opens the database, for everything ipbot remembers.

SQLAlchemy 2 async: an embedded SQLite file by default, PostgreSQL when configured. Every
operation is one short transaction and returns plain data, never a live ORM row.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, case, delete, event, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bot.store.tables import (
    ArtefactRow,
    AuditRow,
    CoverageRow,
    DeliveryRow,
    DeliveryStatus,
    FeedbackRow,
    MetaRow,
    NoticeRow,
    QuestionRow,
    RefreshRequestRow,
    SeenUpdateRow,
    SubscriptionRow,
    SuggestionRow,
    UpdateRow,
    VersionRow,
    VersionStatus,
    utcnow,
)
from retrieval.batching import Batcher

__all__ = [
    "ALL_AREAS",
    "AskedQuestion",
    "Claim",
    "CoverageRequest",
    "Suggestion",
    "DeliveryStatus",
    "DELIVERIES",
    "NOTICES",
    "Published",
    "QuestionRecord",
    "RefreshRequest",
    "Store",
    "StoreError",
    "Subscription",
    "UpdateStatus",
    "VersionInfo",
    "VersionStatus",
    "async_url",
]

log = logging.getLogger(__name__)
ALL_AREAS = "all"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x1B07_0001  # PostgreSQL advisory lock key: one replica migrates at a time
DIGEST_PERIOD = dt.timedelta(days=7)
DELIVERIES, NOTICES = "deliveries", "notices"  # the two outboxes the sender empties
OutboxRow = DeliveryRow | NoticeRow
OUTBOXES: dict[str, type[DeliveryRow] | type[NoticeRow]] = {
    DELIVERIES: DeliveryRow,
    NOTICES: NoticeRow,
}
PERSONAL_CHAT = {"discord": "dm"}  # a person's own chat: a Discord DM, a Telegram private chat


@dataclass(frozen=True)
class VersionInfo:
    """A corpus version as recorded: what /versions lists and /rollback chooses from."""

    id: int
    created_at: dt.datetime
    build: str
    translated_build: str | None
    corpus_version: str
    corpus_hash: str
    passages: int
    status: str
    figures: dict[str, Any]
    changes: dict[str, Any]
    created_by: str


@dataclass(frozen=True)
class RefreshRequest:
    id: int
    requested_by: str
    action: str
    argument: str
    status: str  # pending, running, done, failed
    result: str
    offers: tuple[str, ...]


class StoreError(Exception):
    """The database cannot be used; the message says what to check."""


@dataclass(frozen=True)
class Subscription:
    id: int
    platform: str
    chat_id: str
    kind: str
    areas: tuple[str, ...] | None  # None: every area
    digest: bool
    active: bool

    def wants(self, update_areas: Iterable[str]) -> bool:
        return self.areas is None or bool(set(self.areas) & set(update_areas))


@dataclass(frozen=True)
class QuestionRecord:
    id: int
    platform: str
    text: str
    area_filter: str | None
    asked_at: dt.datetime
    language: str | None = None  # the language it was answered in, where kept


@dataclass(frozen=True)
class AskedQuestion:
    """A stored question as moderators see it: what was asked and how it went, never by whom."""

    id: int
    asked_at: dt.datetime
    platform: str
    text: str
    area: str | None
    answered: bool
    latency_ms: float | None
    helpful: int  # votes
    not_helpful: int


@dataclass(frozen=True)
class Claim:
    """Outbox rows claimed for one chat: one update, several for a weekly digest, or one
    personal notice (then `notice` holds its stored text and the ids are the notices')."""

    delivery_ids: tuple[int, ...]
    subscription_id: int | None
    platform: str
    chat_id: str
    kind: str
    update_ids: tuple[str, ...]
    nonce: str
    attempts: int
    digest: bool
    notice: str | None = None

    @property
    def outbox(self) -> str:
        return NOTICES if self.notice is not None else DELIVERIES


@dataclass(frozen=True)
class CoverageRequest:
    """An open request to be told when a stored question gets an answer."""

    id: int
    question_id: int
    question: str
    area_filter: str | None
    platform: str
    chat_id: str


@dataclass(frozen=True)
class Suggestion:
    """A community suggestion as moderators see it."""

    id: int
    created_at: dt.datetime
    platform: str
    contact: str | None
    kind: str
    passage_id: str | None
    text: str
    url: str | None
    status: str
    reason: str | None = None
    draft: str | None = None


def _suggestion(row: SuggestionRow) -> Suggestion:
    return Suggestion(
        row.id, row.created_at, row.platform, row.contact, row.kind, row.passage_id, row.text,
        row.url, row.status, row.reason, row.draft,
    )  # fmt: skip


@dataclass(frozen=True)
class Published:
    """An update as it was published (the corpus file may have changed since)."""

    id: str
    date: dt.date
    title: str
    body: str
    url: str
    areas: tuple[str, ...] | None  # None: every area


@dataclass(frozen=True)
class UpdateStatus:
    update: str
    subscribers: int
    sent: int
    failed: int
    blocked: int
    uncertain: int
    pending: int
    scheduled: int = 0  # waiting for weekly digests: not pending, so a report can end today

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def done(self) -> bool:
        return self.pending == 0


def async_url(url: str) -> str:
    """The async driver's URL for a plain `sqlite:///` or `postgresql://` URL."""
    parsed = make_url(url)
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise StoreError(
            f"IPBOT_DATABASE_URL: unsupported database '{backend}' (use SQLite or PostgreSQL)"
        )
    if parsed.drivername == backend or parsed.drivername in ("postgresql+psycopg",):
        parsed = parsed.set(drivername=drivers[backend])
    return parsed.render_as_string(hide_password=False)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout let the CLI publish while the bot runs; cascades need FKs.

    In WAL mode, synchronous=NORMAL syncs at checkpoints instead of at every commit: a power
    cut may lose the last moment's commits, never corrupt the file (an application crash
    loses nothing committed).
    """
    cursor = dbapi_connection.cursor()
    pragmas = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON")
    for pragma in pragmas:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "head")


def _revision(connection: Connection) -> tuple[str | None, str | None]:
    current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    return current, head


LEASE_CHECK_SECONDS = 2.0  # how often a lease holder makes sure its connection still stands


def lease_key(job: str) -> int:
    """The advisory lock key of a job: stable across processes and versions."""
    return int.from_bytes(hashlib.sha256(f"ipbot:{job}".encode()).digest()[:8], "big", signed=True)


async def _watch_lease(connection: Any, lost: asyncio.Event) -> None:
    """A lease lasts while its connection answers; when it stops answering, say so once."""
    while True:
        await asyncio.sleep(LEASE_CHECK_SECONDS)
        try:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), LEASE_CHECK_SECONDS * 2)
            await connection.commit()
        except Exception as exc:
            log.warning("lost the database connection that held a lease (%s)", type(exc).__name__)
            lost.set()
            return


# run on a connection (SQLAlchemy Core), not in an ORM session: a third less CPU per batch
_INSERT_QUESTIONS = insert(QuestionRow).returning(QuestionRow.id, sort_by_parameter_order=True)


def _split_areas(value: str) -> tuple[str, ...] | None:
    return None if value == ALL_AREAS else tuple(a for a in value.split(",") if a)


def _join_areas(areas: Iterable[str] | None) -> str:
    return ALL_AREAS if areas is None else ",".join(sorted(set(areas)))


def _subscription(row: SubscriptionRow) -> Subscription:
    return Subscription(
        row.id, row.platform, row.chat_id, row.kind, _split_areas(row.areas), row.digest, row.active
    )


def _notice_claim(row: NoticeRow) -> Claim:
    return Claim(
        delivery_ids=(row.id,),
        subscription_id=None,
        platform=row.platform,
        chat_id=row.chat_id,
        kind=PERSONAL_CHAT.get(row.platform, "private"),
        update_ids=(),
        nonce=row.nonce,
        attempts=row.attempts + 1,
        digest=False,
        notice=row.text,
    )


def _due_for(subscription: SubscriptionRow, now: dt.datetime) -> dt.datetime:
    """When an update published now reaches a subscription: at once, or with the next weekly
    digest (a digest date left in the past by quiet weeks is no reason to send one today)."""
    if not subscription.digest:
        return now
    planned = subscription.next_digest_at
    return planned if planned is not None and planned > now else _next_digest(now)


def _next_digest(now: dt.datetime) -> dt.datetime:
    """Digests go out on Monday at 08:00 UTC."""
    monday = (now + dt.timedelta(days=(7 - now.weekday()) % 7)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    return monday if monday > now else monday + DIGEST_PERIOD


class Store:
    """Everything remembered: questions, feedback, subscriptions, updates, outbox, audit log."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.session = async_sessionmaker(engine, expire_on_commit=False)
        self.dialect = engine.dialect.name
        self._salt: str | None = None
        self._salt_lock = asyncio.Lock()
        # SQLite has no SKIP LOCKED and serves one process: claims take turns here instead
        self._claim_lock: asyncio.Lock | contextlib.nullcontext[None] = (
            asyncio.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        # group commit: questions asked together are stored in one transaction
        self._questions: Batcher[dict[str, Any], int] = Batcher(self._insert_questions)

    @property
    def shared(self) -> bool:
        """Whether several `ipbot run` processes may use this database (PostgreSQL); SQLite
        serves one (`ipbot run` locks its file), which then holds every lease."""
        return self.dialect == "postgresql"

    @classmethod
    async def open(cls, url: str, migrate: bool = True) -> Store:
        """Connect, and bring the schema up to date (under a lock on PostgreSQL)."""
        full = async_url(url)
        parsed = make_url(full)
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # a server connection may have dropped while idle: test it before use; a SQLite file
        # cannot, and the test cost four of a stored batch's trips to SQLite's thread
        engine = create_async_engine(full, pool_pre_ping=not sqlite)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        store = cls(engine)
        try:
            if migrate:
                await store.upgrade()
            else:
                await store.check_revision()
        except StoreError:
            await engine.dispose()
            raise
        except Exception as exc:
            await engine.dispose()
            raise StoreError(
                f"cannot use the database ({parsed.render_as_string()}): {exc}"
            ) from None
        return store

    async def upgrade(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(_upgrade)

    async def check_revision(self) -> str | None:
        async with self.engine.connect() as connection:
            current, head = await connection.run_sync(_revision)
        if current != head:
            raise StoreError(
                f"the database schema is at {current or 'nothing'}, not {head}: run 'ipbot db upgrade'"
            )
        return current

    async def close(self) -> None:
        """Store the questions still waiting to be stored, then disconnect."""
        await self._questions.flush()
        await self.engine.dispose()

    # -- questions and feedback ---------------------------------------------------------

    async def record_question(
        self,
        platform: str,
        text: str,
        area_filter: str | None,
        area: str | None,
        answered: bool,
        best_score: float | None,
        passage_ids: Iterable[str],
        latency_ms: float | None = None,
        language: str | None = None,
    ) -> int:
        """Keep a question and return its id; questions that arrive together share a commit."""
        row = {
            "asked_at": utcnow(),
            "platform": platform,
            "text": text,
            "area_filter": area_filter,
            "area": area,
            "answered": answered,
            "best_score": best_score,
            "passage_ids": ",".join(passage_ids),
            "latency_ms": latency_ms,
            "language": language,
        }
        return await self._questions.submit(row)

    async def _insert_questions(self, rows: list[dict[str, Any]]) -> list[int]:
        """One transaction for a batch of questions; ids come back in the order of `rows`."""
        async with self.engine.begin() as connection:
            result = await connection.execute(_INSERT_QUESTIONS, rows)
            return list(result.scalars())

    async def question(self, question_id: int) -> QuestionRecord | None:
        async with self.session() as session:
            row = await session.get(QuestionRow, question_id)
        if row is None:
            return None
        return QuestionRecord(
            row.id, row.platform, row.text, row.area_filter, row.asked_at, row.language
        )

    async def _voter(self, user_key: str) -> str:
        """A salted one-way digest: enough to count one vote per person, not to name them."""
        if self._salt is None:
            async with self._salt_lock:
                self._salt = self._salt or await self._installation_salt()
        return hashlib.sha256(f"{self._salt}|{user_key}".encode()).hexdigest()[:40]

    async def _installation_salt(self) -> str:
        """The salt of this installation, made once (another process may race to make it)."""
        for _ in range(2):
            async with self.session() as session:
                row = await session.get(MetaRow, "voter_salt")
                if row is not None:
                    return row.value
            try:
                async with self.session.begin() as session:
                    session.add(MetaRow(key="voter_salt", value=secrets.token_hex(16)))
            except IntegrityError:
                continue  # someone else made it first: read theirs
        raise StoreError("cannot create the voter salt")

    async def record_vote(self, question_id: int, user_key: str, helpful: bool) -> bool:
        """Keep a vote; False if this person already voted on this answer (or it is gone)."""
        voter = await self._voter(user_key)
        try:
            async with self.session.begin() as session:
                if await session.get(QuestionRow, question_id) is None:
                    return False
                session.add(FeedbackRow(question_id=question_id, voter=voter, helpful=helpful))
        except IntegrityError:
            return False
        return True

    async def questions_since(self, since: dt.datetime) -> list[AskedQuestion]:
        """Questions asked since a time, oldest first, with their votes counted."""
        votes = (
            select(
                FeedbackRow.question_id,
                func.sum(case((FeedbackRow.helpful.is_(True), 1), else_=0)).label("up"),
                func.sum(case((FeedbackRow.helpful.is_(False), 1), else_=0)).label("down"),
            )
            .group_by(FeedbackRow.question_id)
            .subquery()
        )
        query = (
            select(QuestionRow, votes.c.up, votes.c.down)
            .outerjoin(votes, votes.c.question_id == QuestionRow.id)
            .where(QuestionRow.asked_at >= since)
            .order_by(QuestionRow.asked_at, QuestionRow.id)
        )
        async with self.session() as session:
            rows = (await session.execute(query)).all()
        return [
            AskedQuestion(
                q.id, q.asked_at, q.platform, q.text, q.area, q.answered, q.latency_ms,
                int(up or 0), int(down or 0),
            )
            for q, up, down in rows
        ]  # fmt: skip

    async def feedback_counts(self) -> dict[bool, int]:
        async with self.session() as session:
            rows = await session.execute(
                select(FeedbackRow.helpful, func.count()).group_by(FeedbackRow.helpful)
            )
        return {bool(helpful): int(count) for helpful, count in rows.all()}

    # -- subscriptions ------------------------------------------------------------------

    async def subscribe(
        self,
        platform: str,
        chat_id: str,
        kind: str,
        areas: Iterable[str] | None,
        digest: bool = False,
    ) -> Subscription:
        """Add areas to a chat's subscription (None: all), creating or reactivating it."""
        async with self.session.begin() as session:
            row = await self._subscription_row(session, platform, chat_id)
            if row is None:
                row = SubscriptionRow(platform=platform, chat_id=chat_id, kind=kind, areas="")
                session.add(row)
                existing: tuple[str, ...] | None = ()
            else:
                existing = _split_areas(row.areas) if row.active else ()
            merged = None if areas is None or existing is None else (*existing, *areas)
            row.areas = _join_areas(merged)
            row.kind, row.digest, row.active, row.inactive_reason = kind, digest, True, None
            row.next_digest_at = _next_digest(utcnow()) if digest else None
            await session.flush()
            return _subscription(row)

    async def unsubscribe(
        self, platform: str, chat_id: str, areas: Iterable[str] | None, all_slugs: Iterable[str]
    ) -> Subscription | None:
        """Remove areas (None: everything); a subscription left with no area is deleted."""
        async with self.session.begin() as session:
            row = await self._subscription_row(session, platform, chat_id)
            if row is None or not row.active:
                return None
            current = _split_areas(row.areas)
            remaining = set(all_slugs if current is None else current) - set(areas or all_slugs)
            if areas is None or not remaining:
                await session.delete(row)
                return None
            row.areas = _join_areas(remaining)
            return _subscription(row)

    async def subscription(self, platform: str, chat_id: str) -> Subscription | None:
        async with self.session() as session:
            row = await self._subscription_row(session, platform, chat_id)
            return _subscription(row) if row is not None else None

    @staticmethod
    async def _subscription_row(
        session: Any, platform: str, chat_id: str
    ) -> SubscriptionRow | None:
        query = select(SubscriptionRow).where(
            SubscriptionRow.platform == platform, SubscriptionRow.chat_id == chat_id
        )
        return (await session.execute(query)).scalar_one_or_none()

    async def subscriptions(self, active: bool = True) -> list[Subscription]:
        async with self.session() as session:
            rows = await session.scalars(
                select(SubscriptionRow).where(SubscriptionRow.active == active)
            )
            return [_subscription(row) for row in rows]

    async def count_subscriptions(self, platform: str, kind: str) -> int:
        async with self.session() as session:
            count = await session.scalar(
                select(func.count()).where(
                    SubscriptionRow.platform == platform,
                    SubscriptionRow.kind == kind,
                    SubscriptionRow.active.is_(True),
                )
            )
        return int(count or 0)

    async def purge_questions(self, older_than: dt.timedelta) -> int:
        """Delete questions (and their votes) past the retention period."""
        cutoff = utcnow() - older_than
        async with self.session.begin() as session:
            old = select(QuestionRow.id).where(QuestionRow.asked_at < cutoff)
            await session.execute(delete(FeedbackRow).where(FeedbackRow.question_id.in_(old)))
            await session.execute(delete(CoverageRow).where(CoverageRow.question_id.in_(old)))
            result = await session.execute(delete(QuestionRow).where(QuestionRow.asked_at < cutoff))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def deactivate(self, subscription_id: int, reason: str) -> None:
        """A chat that blocked the bot or disappeared gets nothing more, with the reason kept."""
        async with self.session.begin() as session:
            await session.execute(
                update(SubscriptionRow)
                .where(SubscriptionRow.id == subscription_id)
                .values(active=False, inactive_reason=reason[:500])
            )
            await session.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.subscription_id == subscription_id,
                    DeliveryRow.status == DeliveryStatus.PENDING,
                )
                .values(status=DeliveryStatus.BLOCKED, error=reason[:500], changed_at=utcnow())
            )

    async def move_chat(self, subscription_id: int, new_chat_id: str) -> bool:
        """A Telegram group that became a supergroup has a new id: True once the subscription
        follows it; False when the new id is subscribed already (an administrator subscribed
        the supergroup again), which keeps its own subscription and deliveries."""
        async with self.session.begin() as session:
            old = await session.get(SubscriptionRow, subscription_id)
            if old is None:
                return False
            taken = await session.scalar(
                select(SubscriptionRow.id).where(
                    SubscriptionRow.platform == old.platform, SubscriptionRow.chat_id == new_chat_id
                )
            )
            if taken is not None:
                return False
            old.chat_id = new_chat_id
        return True

    async def forget(self, platform: str, user_key: str, chat_ids: Iterable[str]) -> int:
        """Delete the caller's own subscriptions (with their outbox rows) and their votes."""
        voter = await self._voter(user_key)
        async with self.session.begin() as session:
            gone = await session.execute(
                delete(SubscriptionRow).where(
                    SubscriptionRow.platform == platform,
                    SubscriptionRow.chat_id.in_(list(chat_ids)),
                )
            )
            votes = await session.execute(delete(FeedbackRow).where(FeedbackRow.voter == voter))
            await self._forget_community(session, platform, list(chat_ids))
            if self.dialect == "sqlite":  # cascades run in SQLite only with foreign_keys on
                await session.execute(
                    delete(DeliveryRow).where(
                        DeliveryRow.subscription_id.not_in(select(SubscriptionRow.id))
                    )
                )
            return int(gone.rowcount or 0) + int(votes.rowcount or 0)  # type: ignore[attr-defined]

    @staticmethod
    async def _forget_community(session: Any, platform: str, chat_ids: list[str]) -> None:
        """`/forget` also drops coverage requests, the contact left with suggestions and the
        personal notices to them, sent or not (they quote the question or suggestion; a notice
        being sent right now goes out, and its outcome then updates no row)."""
        await session.execute(
            delete(CoverageRow).where(
                CoverageRow.platform == platform, CoverageRow.chat_id.in_(chat_ids)
            )
        )
        await session.execute(
            delete(NoticeRow).where(NoticeRow.platform == platform, NoticeRow.chat_id.in_(chat_ids))
        )
        await session.execute(
            update(SuggestionRow)
            .where(SuggestionRow.platform == platform, SuggestionRow.contact.in_(chat_ids))
            .values(contact=None)
        )

    # -- "tell me when this is covered" ---------------------------------------------------

    async def request_coverage(self, question_id: int, platform: str, chat_id: str) -> bool | None:
        """Remember who to tell; False if already asked, None if the question is gone."""
        try:
            async with self.session.begin() as session:
                if await session.get(QuestionRow, question_id) is None:
                    return None
                session.add(
                    CoverageRow(question_id=question_id, platform=platform, chat_id=chat_id)
                )
        except IntegrityError:
            return False
        return True

    async def open_coverage_requests(self) -> list[CoverageRequest]:
        """Requests not yet answered, oldest first, with their question."""
        query = (
            select(CoverageRow, QuestionRow)
            .join(QuestionRow, QuestionRow.id == CoverageRow.question_id)
            .where(CoverageRow.notified_at.is_(None))
            .order_by(CoverageRow.id)
        )
        async with self.session() as session:
            rows = (await session.execute(query)).all()
        return [
            CoverageRequest(c.id, q.id, q.text, q.area_filter, c.platform, c.chat_id)
            for c, q in rows
        ]

    async def mark_covered(self, request_id: int) -> None:
        async with self.session.begin() as session:
            await session.execute(
                update(CoverageRow).where(CoverageRow.id == request_id).values(notified_at=utcnow())
            )

    # -- suggestions ----------------------------------------------------------------------

    async def add_suggestion(
        self,
        platform: str,
        contact: str | None,
        kind: str,
        passage_id: str | None,
        text: str,
        url: str | None,
    ) -> int:
        row = SuggestionRow(
            platform=platform, contact=contact, kind=kind, passage_id=passage_id, text=text, url=url
        )
        async with self.session.begin() as session:
            session.add(row)
            await session.flush()
            return row.id

    async def open_suggestions(self, limit: int = 5) -> list[Suggestion]:
        async with self.session() as session:
            rows = await session.scalars(
                select(SuggestionRow)
                .where(SuggestionRow.status == "open")
                .order_by(SuggestionRow.id)
                .limit(limit)
            )
            return [_suggestion(row) for row in rows]

    async def suggestion(self, suggestion_id: int) -> Suggestion | None:
        async with self.session() as session:
            row = await session.get(SuggestionRow, suggestion_id)
            return _suggestion(row) if row is not None else None

    async def decide_suggestion(
        self,
        suggestion_id: int,
        status: str,
        actor: str,
        reason: str | None = None,
        draft: str | None = None,
    ) -> Suggestion | None:
        """Accept or reject an open suggestion; None if it is not open (decided by someone)."""
        async with self.session.begin() as session:
            result = await session.execute(
                update(SuggestionRow)
                .where(SuggestionRow.id == suggestion_id, SuggestionRow.status == "open")
                .values(
                    status=status, decided_by=actor, decided_at=utcnow(), reason=reason, draft=draft
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            row = await session.get(SuggestionRow, suggestion_id, populate_existing=True)
            return _suggestion(row) if row is not None else None

    # -- publishing and the outbox ------------------------------------------------------

    async def is_published(self, update_id: str) -> bool:
        async with self.session() as session:
            return await session.get(UpdateRow, update_id) is not None

    async def publish(
        self,
        update_id: str,
        date: dt.date,
        title: str,
        body: str,
        url: str,
        areas: Iterable[str],
        published_by: str,
    ) -> int | None:
        """Queue an update for every matching active subscription, in one transaction.

        Returns how many deliveries were queued, or None if it was already published.
        """
        areas = tuple(areas)
        now = utcnow()
        try:
            async with self.session.begin() as session:
                session.add(
                    UpdateRow(
                        id=update_id,
                        date=date,
                        title=title,
                        body=body,
                        url=url,
                        areas=_join_areas(areas),
                        published_by=published_by,
                        published_at=now,
                    )
                )
                await session.flush()
                rows = await session.scalars(
                    select(SubscriptionRow).where(SubscriptionRow.active.is_(True))
                )
                queued = 0
                for row in rows:
                    if not _subscription(row).wants(areas):
                        continue
                    due = _due_for(row, now)
                    session.add(
                        DeliveryRow(
                            update_id=update_id,
                            subscription_id=row.id,
                            platform=row.platform,
                            due_at=due,
                            nonce=secrets.token_hex(9),
                            changed_at=now,
                        )
                    )
                    queued += 1
                return queued
        except IntegrityError:
            return None

    async def published_updates(self) -> list[Published]:
        """Every published update, oldest first (for the feeds)."""
        async with self.session() as session:
            rows = await session.scalars(select(UpdateRow).order_by(UpdateRow.date, UpdateRow.id))
            return [
                Published(r.id, r.date, r.title, r.body, r.url, _split_areas(r.areas)) for r in rows
            ]

    async def set_report(
        self,
        update_id: str,
        platform: str,
        chat_id: str | None,
        message_id: str | None,
        kind: str | None = None,
    ) -> None:
        """Where the moderator's live delivery report is, so the sender can edit it (`kind`:
        the chat's, kept when None)."""
        values: dict[str, Any] = {
            "report_platform": platform, "report_chat": chat_id, "report_message": message_id
        }  # fmt: skip
        if kind is not None:
            values["report_kind"] = kind
        async with self.session.begin() as session:
            await session.execute(update(UpdateRow).where(UpdateRow.id == update_id).values(values))

    async def published_count(self) -> int:
        """How many updates have been published (each once): feeds follow it."""
        async with self.session() as session:
            return int(await session.scalar(select(func.count()).select_from(UpdateRow)) or 0)

    async def update_row(self, update_id: str) -> UpdateRow | None:
        async with self.session() as session:
            return await session.get(UpdateRow, update_id)

    async def status(self, update_id: str) -> UpdateStatus | None:
        async with self.session() as session:
            if await session.get(UpdateRow, update_id) is None:
                return None
            rows = await session.execute(
                select(DeliveryRow.status, func.count())
                .where(DeliveryRow.update_id == update_id)
                .group_by(DeliveryRow.status)
            )
            scheduled = await session.scalar(
                select(func.count())
                .select_from(DeliveryRow)
                .join(SubscriptionRow, SubscriptionRow.id == DeliveryRow.subscription_id)
                .where(
                    DeliveryRow.update_id == update_id,
                    DeliveryRow.status == DeliveryStatus.PENDING,
                    SubscriptionRow.digest.is_(True),
                )
            )
        counts = {str(status): int(n) for status, n in rows.all()}
        pending = counts.get(DeliveryStatus.PENDING, 0) + counts.get(DeliveryStatus.SENDING, 0)
        pending -= scheduled or 0
        return UpdateStatus(
            update=update_id,
            subscribers=sum(counts.values()),
            sent=counts.get(DeliveryStatus.SENT, 0),
            failed=counts.get(DeliveryStatus.FAILED, 0),
            blocked=counts.get(DeliveryStatus.BLOCKED, 0),
            uncertain=counts.get(DeliveryStatus.UNCERTAIN, 0),
            pending=pending,
            scheduled=int(scheduled or 0),
        )

    async def recover(self, platforms: Iterable[str], resendable: Iterable[str]) -> int:
        """After a crash: rows of `platforms` left `sending` (in both outboxes) are resent where
        the platform deduplicates (`resendable`), and marked `uncertain` elsewhere. Returns the
        uncertain count."""
        platforms, resendable = list(platforms), list(resendable)
        uncertain = 0
        async with self.session.begin() as session:
            for table in OUTBOXES.values():
                stuck = (table.status == DeliveryStatus.SENDING, table.platform.in_(platforms))
                await session.execute(
                    update(table)
                    .where(*stuck, table.platform.in_(resendable))
                    .values(status=DeliveryStatus.PENDING, changed_at=utcnow())
                )
                result = await session.execute(
                    update(table)
                    .where(*stuck, table.platform.not_in(resendable))
                    .values(
                        status=DeliveryStatus.UNCERTAIN,
                        error="interrupted while sending",
                        changed_at=utcnow(),
                    )
                )
                uncertain += int(result.rowcount or 0)  # type: ignore[attr-defined]
        return uncertain

    async def claim(self, platforms: Iterable[str], limit: int = 50) -> list[Claim]:
        """Mark due pending rows `sending` and commit, before anything is sent.

        Personal notices go first (someone is waiting for each), then updates, in one
        transaction. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several senders claim without
        overlap. A digest subscription's due rows are claimed together, as one message.
        """
        platforms, now = list(platforms), utcnow()
        async with self._claim_lock, self.session.begin() as session:
            notices = await self._take_due(session, NoticeRow, platforms, limit, now)
            deliveries = []
            if len(notices) < limit:
                deliveries = await self._claim_deliveries(
                    session, platforms, limit - len(notices), now
                )
        return [_notice_claim(row) for row in notices] + deliveries

    @staticmethod
    async def _take_due(
        session: Any, table: type[OutboxRow], platforms: list[str], limit: int, now: dt.datetime
    ) -> list[Any]:
        """Due pending rows of one outbox, locked, marked `sending`; the rows this claim won."""
        due = (
            select(table)
            .where(
                table.status == DeliveryStatus.PENDING,
                table.platform.in_(platforms),
                table.due_at <= now,
            )
            .order_by(table.due_at, table.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        found = list(await session.scalars(due))
        if not found:
            return []
        claimed = set(
            await session.scalars(
                update(table)
                .where(table.id.in_([d.id for d in found]), table.status == DeliveryStatus.PENDING)
                .values(status=DeliveryStatus.SENDING, attempts=table.attempts + 1, changed_at=now)
                .returning(table.id)
            )
        )
        return [d for d in found if d.id in claimed]

    async def _claim_deliveries(
        self, session: Any, platforms: list[str], limit: int, now: dt.datetime
    ) -> list[Claim]:
        rows = await self._take_due(session, DeliveryRow, platforms, limit, now)
        if not rows:
            return []
        subs = {
            sub.id: sub
            for sub in await session.scalars(
                select(SubscriptionRow).where(
                    SubscriptionRow.id.in_({d.subscription_id for d in rows})
                )
            )
        }
        rows += await self._digest_companions(session, rows, subs, now)
        for sub in subs.values():
            if sub.digest:
                sub.next_digest_at = _next_digest(now)
        groups: dict[int, list[DeliveryRow]] = {}
        for delivery in rows:
            groups.setdefault(delivery.subscription_id, []).append(delivery)
        return [
            Claim(
                delivery_ids=tuple(r.id for r in group),
                subscription_id=sub_id,
                platform=subs[sub_id].platform,
                chat_id=subs[sub_id].chat_id,
                kind=subs[sub_id].kind,
                update_ids=tuple(r.update_id for r in group),
                nonce=group[0].nonce,
                attempts=max(r.attempts for r in group) + 1,
                digest=subs[sub_id].digest,
            )
            for sub_id, group in groups.items()
        ]

    @staticmethod
    async def _digest_companions(
        session: Any, rows: list[DeliveryRow], subs: dict[int, SubscriptionRow], now: dt.datetime
    ) -> list[DeliveryRow]:
        """A weekly digest sends every due update of its chat at once: claim them together."""
        digests = [sub.id for sub in subs.values() if sub.digest]
        if not digests:
            return []
        taken = [r.id for r in rows]
        extra = list(
            await session.scalars(
                select(DeliveryRow)
                .where(
                    DeliveryRow.subscription_id.in_(digests),
                    DeliveryRow.status == DeliveryStatus.PENDING,
                    DeliveryRow.due_at <= now,
                    DeliveryRow.id.not_in(taken),
                )
                .with_for_update(skip_locked=True)
            )
        )
        if extra:
            await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_([r.id for r in extra]))
                .values(
                    status=DeliveryStatus.SENDING, attempts=DeliveryRow.attempts + 1, changed_at=now
                )
            )
        return extra

    async def finish(
        self,
        delivery_ids: Iterable[int],
        status: DeliveryStatus,
        message_id: str | None = None,
        error: str | None = None,
        retry_at: dt.datetime | None = None,
        outbox: str = DELIVERIES,
    ) -> None:
        """Record a send's outcome; `pending` with `retry_at` tries again later."""
        values: dict[str, Any] = {"status": status, "changed_at": utcnow(), "error": error}
        if message_id is not None:
            values["message_id"] = message_id
        if retry_at is not None:
            values["due_at"] = retry_at
        table = OUTBOXES[outbox]
        async with self.session.begin() as session:
            await session.execute(
                update(table).where(table.id.in_(list(delivery_ids))).values(**values)
            )

    async def next_due(self, platforms: Iterable[str]) -> dt.datetime | None:
        """When the earliest pending row of either outbox falls due, so the sender can sleep."""
        platforms = list(platforms)
        async with self.session() as session:
            times = [
                await session.scalar(
                    select(func.min(table.due_at)).where(
                        table.status == DeliveryStatus.PENDING, table.platform.in_(platforms)
                    )
                )
                for table in OUTBOXES.values()
            ]
        return min((t for t in times if t is not None), default=None)

    # -- personal notices -------------------------------------------------------------------

    async def enqueue_notice(
        self, platform: str, chat_id: str, kind: str, text: str, key: str
    ) -> bool:
        """Queue a one-off message to one person; False when a notice with this key exists."""
        try:
            async with self.session.begin() as session:
                session.add(
                    NoticeRow(
                        key=key[:200],
                        platform=platform,
                        chat_id=chat_id,
                        kind=kind,
                        text=text,
                        nonce=secrets.token_hex(9),
                    )
                )
        except IntegrityError:
            return False
        return True

    async def notice_status(self, key: str) -> str | None:
        """Where the notice with this key stands (pending, sent, ...), or None if unknown."""
        async with self.session() as session:
            return await session.scalar(select(NoticeRow.status).where(NoticeRow.key == key))

    async def reports_in_progress(self) -> list[str]:
        """Updates with a live report whose deliveries are not all settled."""
        async with self.session() as session:
            rows = await session.scalars(
                select(UpdateRow.id).where(UpdateRow.report_chat.is_not(None))
            )
            return list(rows)

    async def resend_uncertain(self, update_id: str) -> int:
        """A moderator's deliberate choice: queue the uncertain rows of an update again."""
        async with self.session.begin() as session:
            result = await session.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.update_id == update_id,
                    DeliveryRow.status == DeliveryStatus.UNCERTAIN,
                )
                .values(status=DeliveryStatus.PENDING, due_at=utcnow(), changed_at=utcnow())
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- audit ----------------------------------------------------------------------------

    async def audit(self, actor: str, action: str, detail: str = "", result: str = "") -> None:
        async with self.session.begin() as session:
            session.add(AuditRow(actor=actor, action=action, detail=detail, result=result))

    async def audit_log(self, limit: int = 50) -> list[AuditRow]:
        async with self.session() as session:
            rows = await session.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit))
            return list(rows)

    # -- corpus versions and refresh requests ----------------------------------------------

    async def record_version(
        self,
        build: str,
        translated_build: str | None,
        corpus_version: str,
        corpus_hash: str,
        passages: int,
        status: VersionStatus,
        created_by: str,
        figures: dict[str, Any] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> int:
        """Record a version (once per build folder) and return its number."""
        async with self.session.begin() as session:
            found = await session.scalar(select(VersionRow).where(VersionRow.build == build))
            if found is not None:
                return found.id
            row = VersionRow(
                build=build,
                translated_build=translated_build,
                corpus_version=corpus_version,
                corpus_hash=corpus_hash,
                passages=passages,
                status=status,
                created_by=created_by,
                figures=json.dumps(figures or {}),
                changes=json.dumps(changes or {}),
                promoted_at=utcnow() if status == VersionStatus.LIVE else None,
            )
            session.add(row)
            await session.flush()
            return row.id

    async def version(self, number: int) -> VersionInfo | None:
        async with self.session() as session:
            row = await session.get(VersionRow, number)
            return _version_info(row) if row else None

    async def versions(self, limit: int = 10) -> list[VersionInfo]:
        """The newest versions first."""
        async with self.session() as session:
            rows = await session.scalars(
                select(VersionRow).order_by(VersionRow.id.desc()).limit(limit)
            )
            return [_version_info(r) for r in rows]

    async def live_version(self) -> VersionInfo | None:
        async with self.session() as session:
            row = await session.scalar(
                select(VersionRow).where(VersionRow.status == VersionStatus.LIVE)
            )
            return _version_info(row) if row else None

    async def set_figures(self, number: int, figures: dict[str, Any]) -> None:
        async with self.session.begin() as session:
            await session.execute(
                update(VersionRow)
                .where(VersionRow.id == number)
                .values(figures=json.dumps(figures))
            )

    async def make_live(self, number: int, leaving: VersionStatus = VersionStatus.PREVIOUS) -> None:
        """The one live version changes: the old one becomes `leaving`, this one live."""
        async with self.session.begin() as session:
            await session.execute(
                update(VersionRow)
                .where(VersionRow.status == VersionStatus.LIVE, VersionRow.id != number)
                .values(status=leaving)
            )
            await session.execute(
                update(VersionRow)
                .where(VersionRow.id == number)
                .values(status=VersionStatus.LIVE, promoted_at=utcnow())
            )

    async def previous_version(self) -> VersionInfo | None:
        """The version that was live before the live one: where /rollback goes."""
        async with self.session() as session:
            row = await session.scalar(
                select(VersionRow)
                .where(VersionRow.status == VersionStatus.PREVIOUS)
                .order_by(VersionRow.promoted_at.desc(), VersionRow.id.desc())
                .limit(1)
            )
            return _version_info(row) if row else None

    async def request_refresh(self, action: str, argument: str, actor: str) -> int:
        async with self.session.begin() as session:
            row = RefreshRequestRow(action=action, argument=argument, requested_by=actor)
            session.add(row)
            await session.flush()
            return row.id

    async def claim_refresh(self) -> RefreshRequest | None:
        """The oldest pending request, marked running; one bot takes each (SKIP LOCKED)."""
        async with self.session.begin() as session:
            row = await session.scalar(
                select(RefreshRequestRow)
                .where(RefreshRequestRow.status == "pending")
                .order_by(RefreshRequestRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return None
            row.status = "running"
            return _refresh_request(row)

    async def finish_refresh(
        self, number: int, ok: bool, result: str, offers: Iterable[str] = ()
    ) -> None:
        async with self.session.begin() as session:
            await session.execute(
                update(RefreshRequestRow)
                .where(RefreshRequestRow.id == number)
                .values(
                    status="done" if ok else "failed",
                    result=result,
                    offers=",".join(offers),
                    finished_at=utcnow(),
                )
            )

    async def withdraw_refresh(self, number: int) -> bool:
        """Cancel a request no bot has taken yet; False if one already has."""
        async with self.session.begin() as session:
            done = await session.execute(
                update(RefreshRequestRow)
                .where(RefreshRequestRow.id == number, RefreshRequestRow.status == "pending")
                .values(status="withdrawn", finished_at=utcnow())
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    async def refresh_request(self, number: int) -> RefreshRequest | None:
        async with self.session() as session:
            row = await session.get(RefreshRequestRow, number)
            return _refresh_request(row) if row else None

    async def abandon_refreshes(self, older_than: dt.timedelta) -> int:
        """Requests left running by a process that died: failed, so nobody waits forever.

        Only those asked for longer ago than `older_than` (far more than a rebuild takes):
        another replica may be working on a younger one, and a replica that starts must not
        fail it (the moderator read "nothing changed" while the new version went live).
        """
        return await self._settle_old_refreshes(
            "running",
            older_than,
            "failed",
            "The bot stopped while working on this; nothing changed. Try again.",
        )

    async def withdraw_unclaimed_refreshes(self, older_than: dt.timedelta) -> int:
        """Requests no bot took while their asker waited: withdrawn, so that a bot started
        later does not carry out a /rollback or /reload nobody is waiting for any more."""
        return await self._settle_old_refreshes(
            "pending",
            older_than,
            "withdrawn",
            "No bot took this request while it was awaited; nothing changed.",
        )

    async def _settle_old_refreshes(
        self, status: str, older_than: dt.timedelta, outcome: str, result: str
    ) -> int:
        """Requests in `status` asked for longer ago than `older_than`, ended as `outcome`."""
        async with self.session.begin() as session:
            done = await session.execute(
                update(RefreshRequestRow)
                .where(
                    RefreshRequestRow.status == status,
                    RefreshRequestRow.requested_at < utcnow() - older_than,
                )
                .values(status=outcome, result=result, finished_at=utcnow())
            )
            return int(done.rowcount or 0)  # type: ignore[attr-defined]

    async def pending_by_platform(self) -> dict[str, int]:
        """Deliveries waiting in the outbox, per platform (for /metrics)."""
        async with self.session() as session:
            rows = await session.execute(
                select(DeliveryRow.platform, func.count())
                .where(DeliveryRow.status == DeliveryStatus.PENDING)
                .group_by(DeliveryRow.platform)
            )
            return {platform: int(count) for platform, count in rows}

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    # -- replicas ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, job: str) -> AsyncIterator[asyncio.Event | None]:
        """Hold `job` for this process while the block runs, or yield None if another holds it.

        On PostgreSQL the lease is a session advisory lock on a connection of its own: the
        server releases it when this process dies, however it dies, so another replica can
        take over. The yielded event is set if the connection (and so the lease) is lost.
        SQLite serves one process (`ipbot run` locks the file), which always holds every job.
        """
        lost = asyncio.Event()
        if not self.shared:
            yield lost
            return
        key = lease_key(job)
        async with self.engine.connect() as connection:
            held = await connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            await connection.commit()
            if not held:
                yield None
                return
            watch = asyncio.create_task(_watch_lease(connection, lost), name=f"lease-{job}")
            try:
                yield lost
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                with contextlib.suppress(Exception):
                    if lost.is_set():  # broken: the server ended the session and its lock
                        await connection.invalidate()
                    else:
                        await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await connection.commit()

    async def meta(self, key: str) -> str | None:
        async with self.session() as session:
            row = await session.get(MetaRow, key)
        return None if row is None else row.value

    async def set_meta(self, key: str, value: str) -> None:
        async with self.session.begin() as session:
            await session.merge(MetaRow(key=key, value=value))

    async def first_sight(self, platform: str, update_id: str) -> bool:
        """True for the first process to see this update; every later delivery of it is False."""
        try:
            async with self.session.begin() as session:
                session.add(SeenUpdateRow(platform=platform, update_id=update_id))
        except IntegrityError:
            return False
        return True

    async def forget_seen(self, older_than: dt.timedelta) -> int:
        """Platforms redeliver within minutes; a day of update ids is plenty."""
        async with self.session.begin() as session:
            result = await session.execute(
                delete(SeenUpdateRow).where(SeenUpdateRow.seen_at < utcnow() - older_than)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def save_artefact(self, build: str, archive: bytes) -> None:
        """Keep a version's build files for replicas that lack them (once per build)."""
        async with self.session.begin() as session:
            if await session.get(ArtefactRow, build) is None:
                session.add(ArtefactRow(build=build, archive=archive))

    async def artefact(self, build: str) -> bytes | None:
        async with self.session() as session:
            row = await session.get(ArtefactRow, build)
        return None if row is None else bytes(row.archive)

    async def has_artefact(self, build: str) -> bool:
        async with self.session() as session:
            found = await session.scalar(
                select(ArtefactRow.build).where(ArtefactRow.build == build)
            )
        return found is not None

    async def prune_artefacts(self, keep: Iterable[str]) -> None:
        """Archives go with the versions whose files are no longer kept."""
        async with self.session.begin() as session:
            await session.execute(delete(ArtefactRow).where(ArtefactRow.build.not_in(list(keep))))


def _version_info(row: VersionRow) -> VersionInfo:
    return VersionInfo(
        id=row.id,
        created_at=row.created_at,
        build=row.build,
        translated_build=row.translated_build,
        corpus_version=row.corpus_version,
        corpus_hash=row.corpus_hash,
        passages=row.passages,
        status=row.status,
        figures=json.loads(row.figures or "{}"),
        changes=json.loads(row.changes or "{}"),
        created_by=row.created_by,
    )


def _refresh_request(row: RefreshRequestRow) -> RefreshRequest:
    return RefreshRequest(
        id=row.id,
        requested_by=row.requested_by,
        action=row.action,
        argument=row.argument,
        status=row.status,
        result=row.result,
        offers=tuple(o for o in row.offers.split(",") if o),
    )


async def open_store(url: str, migrate: bool = True, attempts: int = 1) -> Store:
    """Open the store, retrying briefly while the server starts (a compose stack)."""
    for attempt in range(attempts):
        try:
            return await Store.open(url, migrate)
        except StoreError:
            if attempt + 1 == attempts:
                raise
            await asyncio.sleep(min(2**attempt, 10))
    raise AssertionError("unreachable")
