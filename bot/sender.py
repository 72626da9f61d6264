"""The sender: delivers queued updates from the outbox, paced per platform, never on the reply path.

Rows are claimed and committed as `sending` before the platform is called, then settled with
the outcome. A crash leaves `sending` rows, which `Store.recover` turns into resends where the
platform deduplicates (Discord's nonce) and into `uncertain` where it cannot (Telegram).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from bot import metrics
from bot.store import Claim, DeliveryStatus, Store, UpdateStatus
from bot.store.tables import utcnow
from retrieval.corpus import Area, Passage
from retrieval.search import Hit

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
POLL_SECONDS = 1.0
REPORT_EVERY = 3.0  # seconds between edits of a moderator's live delivery report


class Outcome(StrEnum):
    DELIVERED = "delivered"
    BLOCKED = "blocked"  # the chat blocked the bot, left, or no longer exists
    RETRY = "retry"  # flood control (retry_after) or a passing fault
    MOVED = "moved"  # the chat has a new id (a Telegram group upgraded to a supergroup)
    FAILED = "failed"  # the platform refused this message for good


@dataclass(frozen=True)
class DeliveryResult:
    """What a platform said to one send; adapters translate their errors into this."""

    outcome: Outcome
    message_id: str | None = None
    retry_after: float | None = None  # flood control: the whole sender waits this long
    detail: str = ""
    new_chat_id: str | None = None


@dataclass(frozen=True)
class Target:
    """Where a message goes: a platform's chat, channel or DM."""

    platform: str
    chat_id: str
    kind: str = "private"


@dataclass(frozen=True)
class UpdateItem:
    """One update as subscribers read it."""

    id: str
    date: dt.date
    title: str
    body: str
    url: str
    areas: tuple[Area, ...]


@dataclass(frozen=True)
class Bulletin:
    """What a subscriber receives: one update, or several in a weekly digest."""

    items: tuple[UpdateItem, ...]
    digest: bool = False


@dataclass(frozen=True)
class DeliveryReport:
    """The moderator's live view of one broadcast, edited as it goes."""

    title: str
    status: UpdateStatus


@dataclass(frozen=True)
class PersonalMessage:
    """A one-off message to one person: a question now covered, a suggestion's outcome.

    It waits in the notices outbox as JSON (`stored`), so what is sent is what was queued,
    whatever the corpus says by then; `hits` are cited passages, shown as answers show them.
    """

    kind: str
    text: str
    lead: str = ""
    hits: tuple[Hit, ...] = ()

    def stored(self) -> str:
        hits = [
            {"highlight": hit.highlight, **{k: getattr(hit.passage, k) for k in PASSAGE_FIELDS}}
            for hit in self.hits
        ]
        return json.dumps({"kind": self.kind, "text": self.text, "lead": self.lead, "hits": hits})

    @classmethod
    def from_stored(cls, stored: str) -> PersonalMessage:
        """The message as queued; text that is not JSON is a plain message."""
        try:
            data = json.loads(stored)
        except ValueError:
            return cls("notice", stored)
        hits = tuple(
            Hit(Passage(**{k: h[k] for k in PASSAGE_FIELDS}), 0.0, h["highlight"])
            for h in data.get("hits", ())
        )
        return cls(data["kind"], data["text"], data.get("lead", ""), hits)


PASSAGE_FIELDS = ("id", "area", "kind", "title", "text", "citation", "url")
Outbound = Bulletin | DeliveryReport | PersonalMessage


async def published_items(store: Store, areas: Iterable[Area]) -> list[UpdateItem]:
    """Every published update as subscribers read it (as published, whatever the file says now)."""
    by_slug = {area.slug: area for area in areas}
    return [
        UpdateItem(
            p.id,
            p.date,
            p.title,
            p.body,
            p.url,
            tuple(by_slug[s] for s in (p.areas or by_slug) if s in by_slug),
        )
        for p in await store.published_updates()
    ]


class Outlet(Protocol):
    """A platform's sending side, as the sender needs it."""

    platform: str
    resends_safely: bool  # a resend after a crash cannot duplicate (Discord's nonce)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(
        self, target: Target, message: Outbound, nonce: str | None = None
    ) -> DeliveryResult: ...

    async def edit(self, target: Target, message_id: str, message: Outbound) -> DeliveryResult: ...


@dataclass(frozen=True)
class Pace:
    """A platform's sending limits (Telegram's: about 30/s overall, 1/s per chat, 20/min per group)."""

    per_second: float = 25.0
    per_chat_seconds: float = 1.0
    per_group_minute: int = 20
    concurrency: int = 8


class Pacer:
    """Spaces sends to stay under a platform's limits, and holds everyone during flood control."""

    def __init__(self, pace: Pace, clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.pace, self._clock = pace, clock
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._last_in_chat: dict[str, float] = {}
        self._group_sends: dict[str, deque[float]] = {}
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def wait_turn(self, chat_id: str, group: bool) -> None:
        async with self._lock:
            now = self._clock()
            start = max(
                now, self._next_slot, self._paused_until, self._chat_free_at(chat_id, group, now)
            )
            self._next_slot = start + 1.0 / self.pace.per_second
            self._last_in_chat[chat_id] = start
            if group:
                self._group_sends.setdefault(chat_id, deque()).append(start)
            self._forget_idle(now)
        await asyncio.sleep(max(0.0, start - self._clock()))
        while self._paused_until > self._clock():  # a 429 arrived while we waited
            await asyncio.sleep(self._paused_until - self._clock())

    def _chat_free_at(self, chat_id: str, group: bool, now: float) -> float:
        free = self._last_in_chat.get(chat_id, -1e9) + self.pace.per_chat_seconds
        sends = self._group_sends.get(chat_id)
        if group and sends:
            while sends and now - sends[0] >= 60:
                sends.popleft()
            if len(sends) >= self.pace.per_group_minute:
                free = max(free, sends[0] + 60)
        return free

    def _forget_idle(self, now: float) -> None:
        """Keep memory bounded: chats idle for a minute no longer constrain anything."""
        if len(self._last_in_chat) > 10_000:
            for chat in [c for c, t in self._last_in_chat.items() if now - t > 60]:
                self._last_in_chat.pop(chat, None)
                self._group_sends.pop(chat, None)


class Sender:
    """Claims outbox rows, sends them through the platform outlets, records every outcome."""

    def __init__(
        self,
        store: Store,
        outlets: Iterable[Outlet],
        areas: Iterable[Area] = (),
        paces: dict[str, Pace] | None = None,
    ):
        self.store = store
        self.outlets = {outlet.platform: outlet for outlet in outlets}
        self.areas = {area.slug: area for area in areas}
        self._published: dict[str, UpdateItem] = {}  # what was published never changes
        self.pacers = {name: Pacer((paces or {}).get(name, Pace())) for name in self.outlets}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_report: dict[str, float] = {}
        self._ready: set[str] = set()  # outlets started: their platform is reachable
        self._retry_start_at: dict[str, float] = {}
        self._reports_checked = 0.0

    def wake(self) -> None:
        """Something was queued in this process: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; sends in flight finish and are recorded (see `run`)."""
        self._stopping.set()
        self._wake.set()

    async def run_until(self, end: asyncio.Event) -> None:
        """Deliver while this process holds the sender's lease (see bot.leadership)."""
        self._stopping.clear()
        ender = asyncio.create_task(end.wait())
        ender.add_done_callback(lambda _: self.stop())
        try:
            await self.run()
        finally:
            ender.cancel()

    async def run(self) -> None:
        """Deliver until stopped; returns only when nothing claimed is left unrecorded.

        It starts by settling what a previous holder (this process before a crash, or a
        replica that died) left `sending`.
        """
        if not self.outlets:
            return
        recovered = False
        try:
            while not self._stopping.is_set():
                try:  # the database may be down at any step: the next round tries again
                    if not recovered:
                        await self._recover()
                        recovered = True
                    await self._start_outlets()
                    sent = await self.deliver_once()
                    await self.refresh_reports()
                except Exception:
                    log.exception("sender: a delivery round failed; retrying shortly")
                    sent = 0
                if not sent:
                    await self._sleep_until_due()
        finally:
            for platform in self._ready:
                with contextlib.suppress(Exception):
                    await self.outlets[platform].close()

    async def _recover(self) -> None:
        resendable = [p for p, o in self.outlets.items() if o.resends_safely]
        uncertain = await self.store.recover(self.outlets, resendable)
        if uncertain:
            log.warning(
                "sender: %d deliveries interrupted by a crash are marked uncertain", uncertain
            )

    async def _start_outlets(self) -> None:
        """Connect each platform's sending side; one that is unreachable is tried again later
        while the others deliver."""
        now = time.monotonic()
        for platform, outlet in self.outlets.items():
            if platform in self._ready or self._retry_start_at.get(platform, 0.0) > now:
                continue
            try:
                await outlet.start()
            except Exception as exc:
                log.warning("sender: %s not reachable for broadcasts (%s); retrying", platform, exc)
                self._retry_start_at[platform] = now + 30.0
            else:
                self._ready.add(platform)

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        try:
            due = await self.store.next_due(self._ready)
        except Exception as exc:  # the round that failed said so; the sender must not end here
            log.debug("sender: when the next delivery is due is unknown: %r", exc)
            due = None
        wait = POLL_SECONDS
        if due is not None:
            wait = min(POLL_SECONDS, max(0.0, (due - utcnow()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def deliver_once(self) -> int:
        """Send what is due with each platform's concurrency; how many chats were handled.

        Each worker claims one chat at a time, so at most `concurrency` rows per platform are
        ever `sending`: that bounds what a crash can leave uncertain.
        """
        counts = await asyncio.gather(
            *(
                self._worker(platform)
                for platform in sorted(self._ready)
                for _ in range(self.pacers[platform].pace.concurrency)
            )
        )
        return sum(counts)

    async def _worker(self, platform: str) -> int:
        handled = 0
        while not self._stopping.is_set():
            claims = await self.store.claim([platform], limit=1)
            if not claims:
                break
            await self._deliver(claims[0])
            handled += 1
            await self.refresh_reports()  # a long broadcast keeps its report moving
        return handled

    async def _deliver(self, claim: Claim) -> None:
        outlet, pacer = self.outlets[claim.platform], self.pacers[claim.platform]
        message = await self._message(claim)
        if message is None:
            await self.store.finish(
                claim.delivery_ids,
                DeliveryStatus.FAILED,
                error="update not found",
                outbox=claim.outbox,
            )
            return
        target = Target(claim.platform, claim.chat_id, claim.kind)
        if not await self._turn_before_stop(pacer, claim):
            await self.store.finish(
                claim.delivery_ids, DeliveryStatus.PENDING, error=None, outbox=claim.outbox
            )
            return
        try:
            result = await outlet.send(target, message, nonce=claim.nonce)
        except Exception as exc:  # an adapter bug must not lose the row
            log.exception("sender: %s send failed unexpectedly", claim.platform)
            result = DeliveryResult(Outcome.RETRY, detail=f"{type(exc).__name__}")
        await self._record(claim, result, pacer)

    async def _turn_before_stop(self, pacer: Pacer, claim: Claim) -> bool:
        """Wait for a sending slot; False if a stop came first (the row goes back, unsent)."""
        turn = asyncio.ensure_future(
            pacer.wait_turn(claim.chat_id, claim.kind in ("group", "channel"))
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({turn, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if turn.done():
            return True
        turn.cancel()
        return False

    async def _message(self, claim: Claim) -> Outbound | None:
        if claim.notice is not None:
            return PersonalMessage.from_stored(claim.notice)
        return await self._bulletin(claim)

    async def _bulletin(self, claim: Claim) -> Bulletin | None:
        """The updates of a claim as they were published (the corpus file may have changed)."""
        if not set(claim.update_ids) <= set(self._published):
            for item in await published_items(self.store, self.areas.values()):
                self._published[item.id] = item
        items = tuple(self._published[u] for u in claim.update_ids if u in self._published)
        if not items:
            return None
        return Bulletin(tuple(sorted(items, key=lambda i: i.date)), digest=claim.digest)

    async def _record(self, claim: Claim, result: DeliveryResult, pacer: Pacer) -> None:
        ids, outbox, subscription = claim.delivery_ids, claim.outbox, claim.subscription_id
        metrics.record_delivery(claim.platform, result.outcome.value)
        match result.outcome:
            case Outcome.DELIVERED:
                await self.store.finish(
                    ids, DeliveryStatus.SENT, message_id=result.message_id, outbox=outbox
                )
            case Outcome.BLOCKED:
                await self.store.finish(
                    ids, DeliveryStatus.BLOCKED, error=result.detail, outbox=outbox
                )
                if subscription is not None:
                    await self.store.deactivate(subscription, result.detail or "blocked")
            case Outcome.MOVED if result.new_chat_id and subscription is not None:
                if await self.store.move_chat(subscription, result.new_chat_id):
                    await self.store.finish(ids, DeliveryStatus.PENDING, error="chat moved")
                else:  # the new chat has its own subscription: this one is done with
                    await self.store.deactivate(subscription, "moved to a chat already subscribed")
                    await self.store.finish(ids, DeliveryStatus.BLOCKED, error="chat moved")
            case Outcome.RETRY if result.retry_after is not None:
                pacer.pause(result.retry_after)  # flood control holds the whole platform
                retry_at = utcnow() + dt.timedelta(seconds=result.retry_after)
                await self.store.finish(
                    ids, DeliveryStatus.PENDING, error=result.detail, retry_at=retry_at,
                    outbox=outbox,
                )  # fmt: skip
            case Outcome.RETRY if claim.attempts < MAX_ATTEMPTS:
                backoff = dt.timedelta(seconds=min(2**claim.attempts, 60))
                await self.store.finish(
                    ids, DeliveryStatus.PENDING, error=result.detail,
                    retry_at=utcnow() + backoff, outbox=outbox,
                )  # fmt: skip
            case _:
                await self.store.finish(
                    ids, DeliveryStatus.FAILED, error=result.detail or "failed", outbox=outbox
                )

    async def refresh_reports(self, force: bool = False) -> None:
        """Edit each moderator's delivery report, at most every few seconds, until done."""
        now = time.monotonic()
        if not force and now - self._reports_checked < 1.0:
            return
        self._reports_checked = now
        for update_id in await self.store.reports_in_progress():
            now = time.monotonic()
            if not force and now - self._last_report.get(update_id, 0.0) < REPORT_EVERY:
                continue
            self._last_report[update_id] = now
            await self._edit_report(update_id)

    async def _edit_report(self, update_id: str) -> None:
        row = await self.store.update_row(update_id)
        status = await self.store.status(update_id)
        if row is None or status is None or row.report_platform not in self.outlets:
            return
        outlet = self.outlets[row.report_platform]
        target = Target(row.report_platform, row.report_chat or "", row.report_kind or "private")
        report = DeliveryReport(row.title, status)
        if row.report_message is None:
            result = await outlet.send(target, report)
            message_id = result.message_id
        else:
            await outlet.edit(target, row.report_message, report)
            message_id = row.report_message
        if status.done:  # final figures shown: stop editing
            await self.store.set_report(update_id, row.report_platform, None, None)
            self._last_report.pop(update_id, None)
        elif message_id != row.report_message:
            await self.store.set_report(
                update_id, row.report_platform, row.report_chat or "", message_id
            )
