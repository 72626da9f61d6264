"""The database tables: everything ipbot remembers, in one place.

Times are naive UTC (SQLite keeps no zone); chat ids are strings (Telegram's are 64-bit and
negative for groups, Discord's are snowflakes). No table stores who asked a question.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, orm_insert_sentinel


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class DeliveryStatus(StrEnum):
    """Where one outbox row stands; `sending` is committed before the platform is called."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    BLOCKED = "blocked"
    UNCERTAIN = "uncertain"


class QuestionRow(Base):
    """A question as asked, without who asked it: for buttons, feedback and moderators."""

    __tablename__ = "questions"

    id: Mapped[int] = mapped_column(primary_key=True)
    asked_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    platform: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    area_filter: Mapped[str | None] = mapped_column(String(64))
    area: Mapped[str | None] = mapped_column(String(64))
    answered: Mapped[bool]
    best_score: Mapped[float | None]
    passage_ids: Mapped[str] = mapped_column(Text, default="")
    latency_ms: Mapped[float | None]
    # the language it was answered in (None before it was kept): More and Sources continue
    # that answer, whoever presses them and whatever their client's language
    language: Mapped[str | None] = mapped_column(String(8))
    # lets SQLite insert a batch of questions in one statement and still return each its own
    # id in order: without it, SQLAlchemy inserts them one at a time (one trip to the database
    # thread each)
    _sentinel: Mapped[int | None] = orm_insert_sentinel()


class FeedbackRow(Base):
    """One vote per voter per answer; the voter is a one-way digest, unique to this answer."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("question_id", "voter"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"))
    voter: Mapped[str] = mapped_column(String(64))
    helpful: Mapped[bool]
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SubscriptionRow(Base):
    """A chat that receives updates: a private chat, a group, a channel or a Discord DM."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("platform", "chat_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # private, group, channel, dm, outlet
    areas: Mapped[str] = mapped_column(Text)  # comma-separated slugs, or "all"
    digest: Mapped[bool] = mapped_column(default=False)
    next_digest_at: Mapped[dt.datetime | None]
    active: Mapped[bool] = mapped_column(default=True, index=True)
    inactive_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UpdateRow(Base):
    """A published update; its id is the file name under corpus/updates/."""

    __tablename__ = "updates"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    date: Mapped[dt.date]
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    areas: Mapped[str] = mapped_column(Text)
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_by: Mapped[str] = mapped_column(String(80))
    report_platform: Mapped[str | None] = mapped_column(String(16))
    report_chat: Mapped[str | None] = mapped_column(String(64))
    report_kind: Mapped[str | None] = mapped_column(String(16))  # "dm": a Discord DM is opened
    report_message: Mapped[str | None] = mapped_column(String(64))


class OutboxColumns:
    """What every outbox row has, so deliveries and personal notices share one claim path."""

    platform: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    due_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    message_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    nonce: Mapped[str] = mapped_column(String(25))
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DeliveryRow(OutboxColumns, Base):
    """The outbox: one row per (update, subscription), written with the publish."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("update_id", "subscription_id"),
        Index("ix_deliveries_due", "status", "platform", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    update_id: Mapped[str] = mapped_column(ForeignKey("updates.id", ondelete="CASCADE"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))


class NoticeRow(OutboxColumns, Base):
    """The outbox of one-off personal messages (to one person's private chat or DM).

    `key` names what the notice is about, so the same notice is never queued twice.
    """

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_due", "status", "platform", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    chat_id: Mapped[str] = mapped_column(String(64))  # the person's id: their private chat or DM
    kind: Mapped[str] = mapped_column(String(32))  # what about: covered, suggestion, ...
    text: Mapped[str] = mapped_column(Text)  # the message as stored (see bot.sender.Personal)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    """What a moderator did, when, and how it ended."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(Text, default="")


class MetaRow(Base):
    """Installation-wide values, such as the salt of voter digests."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class VersionStatus(StrEnum):
    """Where a corpus version stands; exactly one is live."""

    LIVE = "live"
    PREVIOUS = "previous"  # was live; /rollback returns to the newest of these
    HELD = "held"  # built, but the quality gate kept it out; /promote N serves it anyway
    ROLLED_BACK = "rolled back"  # left by a rollback; /promote N brings it back


class VersionRow(Base):
    """A corpus version: its build folders on disk, what changed, and its eval figures."""

    __tablename__ = "corpus_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    build: Mapped[str] = mapped_column(String(120), unique=True)
    translated_build: Mapped[str | None] = mapped_column(String(120))
    corpus_version: Mapped[str] = mapped_column(String(64))
    corpus_hash: Mapped[str] = mapped_column(String(64))
    passages: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), index=True)
    figures: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the quality gate's numbers
    changes: Mapped[str] = mapped_column(Text, default="{}")  # JSON: passages added/changed/removed
    created_by: Mapped[str] = mapped_column(String(80))
    promoted_at: Mapped[dt.datetime | None]


class RefreshRequestRow(Base):
    """A moderator's /reload, /promote or /rollback, from chat or the command line.

    Requests go through the database so that `ipbot corpus reload` reaches a bot running on
    another machine, and so that one version change happens at a time.
    """

    __tablename__ = "refresh_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    requested_by: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(16))  # reload, promote, rollback
    argument: Mapped[str] = mapped_column(String(40), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    result: Mapped[str] = mapped_column(Text, default="")  # the summary the moderator reads
    offers: Mapped[str] = mapped_column(Text, default="")  # update ids offered for publishing
    finished_at: Mapped[dt.datetime | None]


class CoverageRow(Base):
    """Someone asked to be told when an unanswered question gets an answer (opt-in only).

    The chat to tell is identity, so it exists only on that request; it goes with the
    question (retention purge) and with `/forget`.
    """

    __tablename__ = "coverage_requests"
    __table_args__ = (UniqueConstraint("question_id", "platform", "chat_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))  # the person's id: their private chat or DM
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    notified_at: Mapped[dt.datetime | None]


class SuggestionRow(Base):
    """A community suggestion waiting for (or decided by) a moderator."""

    __tablename__ = "suggestions"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    platform: Mapped[str] = mapped_column(String(16))
    contact: Mapped[str | None] = mapped_column(String(64))  # the proposer, only with consent
    kind: Mapped[str] = mapped_column(String(16))  # example, correction, source
    passage_id: Mapped[str | None] = mapped_column(String(40))  # what a correction corrects
    text: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    decided_at: Mapped[dt.datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text)
    draft: Mapped[str | None] = mapped_column(Text)  # the draft file written on Accept


class SeenUpdateRow(Base):
    """A platform update already taken by one replica: Telegram may deliver an update twice
    (a webhook retry, two replicas behind a load balancer), and it must be answered once."""

    __tablename__ = "seen_updates"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    update_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class ArtefactRow(Base):
    """A corpus version's build files (index and corpus snapshot) as one archive, so that a
    replica without them on its disk can serve the version another replica built."""

    __tablename__ = "build_artefacts"

    build: Mapped[str] = mapped_column(String(120), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    archive: Mapped[bytes] = mapped_column(LargeBinary)
