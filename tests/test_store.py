"""The store on SQLite and on a real PostgreSQL server: what ipbot remembers, and the outbox."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, update

from bot.store import DeliveryStatus, Store, StoreError, async_url
from bot.store.tables import Base, DeliveryRow, QuestionRow, SubscriptionRow, utcnow

AREAS = ("valuation", "open-science", "industry-academia")


async def open_(url: str) -> Store:
    return await Store.open(url)


async def publish(store: Store, update_id: str = "2023-03-01-adopted", areas=AREAS) -> int | None:
    return await store.publish(
        update_id,
        dt.date(2023, 3, 1),
        "Adopted",
        "The Code was adopted.",
        "https://e.eu",
        areas,
        "cli",
    )


async def test_migrations_run_twice_without_harm(database_url: str) -> None:
    store = await open_(database_url)
    await store.close()
    store = await open_(database_url)
    assert await store.check_revision() == "0008_report_kind"
    await store.close()


async def test_the_migrations_build_exactly_the_tables_the_code_declares(database_url: str) -> None:
    store = await open_(database_url)
    async with store.engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await store.close()
    assert differences == [], "a table changed in tables.py needs a migration"


async def test_a_store_opened_without_migrating_says_to_upgrade(database_url: str) -> None:
    with pytest.raises(StoreError, match="ipbot db upgrade"):
        await Store.open(database_url, migrate=False)


async def test_subscribing_twice_merges_areas_and_all_covers_everything(database_url: str) -> None:
    store = await open_(database_url)
    await store.subscribe("telegram", "1", "private", ["valuation"])
    merged = await store.subscribe("telegram", "1", "private", ["open-science"])
    assert merged.areas == ("open-science", "valuation")
    everything = await store.subscribe("telegram", "1", "private", None)
    assert everything.areas is None and everything.wants(["skills-and-training"])
    await store.close()


async def test_unsubscribing_the_last_area_deletes_the_subscription(database_url: str) -> None:
    store = await open_(database_url)
    await store.subscribe("telegram", "1", "private", ["valuation", "open-science"])
    left = await store.unsubscribe("telegram", "1", ["valuation"], AREAS)
    assert left is not None and left.areas == ("open-science",)
    assert await store.unsubscribe("telegram", "1", ["open-science"], AREAS) is None
    assert await store.subscription("telegram", "1") is None
    await store.close()


async def test_publishing_queues_one_delivery_per_matching_subscription(database_url: str) -> None:
    store = await open_(database_url)
    await store.subscribe("telegram", "1", "private", ["valuation"])
    await store.subscribe("telegram", "2", "private", ["skills-and-training"])
    await store.subscribe("discord", "3", "channel", None)
    assert await publish(store, areas=("valuation",)) == 2
    assert await publish(store, areas=("valuation",)) is None  # already published: nothing new
    status = await store.status("2023-03-01-adopted")
    assert status is not None and (status.subscribers, status.pending) == (2, 2)
    await store.close()


async def test_claimed_rows_are_committed_as_sending_and_not_claimed_again(
    database_url: str,
) -> None:
    store = await open_(database_url)
    for chat in range(5):
        await store.subscribe("telegram", str(chat), "private", None)
    await publish(store)
    first = await store.claim(["telegram"], limit=3)
    second = await store.claim(["telegram"], limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {c.chat_id for c in first} & {c.chat_id for c in second}
    assert await store.claim(["telegram"]) == []
    await store.close()


async def test_concurrent_claims_never_hand_out_a_row_twice(database_url: str) -> None:
    store = await open_(database_url)
    for chat in range(60):
        await store.subscribe("telegram", str(chat), "private", None)
    await publish(store)
    batches = await asyncio.gather(*(store.claim(["telegram"], limit=7) for _ in range(12)))
    chats = [c.chat_id for batch in batches for c in batch]
    assert len(chats) == len(set(chats)) == 60
    await store.close()


async def test_after_a_crash_telegram_sends_are_uncertain_and_discord_sends_resent(
    database_url: str,
) -> None:
    store = await open_(database_url)
    await store.subscribe("telegram", "1", "private", None)
    await store.subscribe("discord", "2", "channel", None)
    await publish(store)
    await store.claim(["telegram", "discord"])
    assert await store.recover(["telegram", "discord"], resendable=["discord"]) == 1
    status = await store.status("2023-03-01-adopted")
    assert status is not None and (status.uncertain, status.pending) == (1, 1)
    again = await store.claim(["telegram", "discord"])
    assert [c.platform for c in again] == ["discord"]
    await store.close()


async def test_a_blocked_chat_is_deactivated_with_its_reason(database_url: str) -> None:
    store = await open_(database_url)
    sub = await store.subscribe("telegram", "1", "private", None)
    await publish(store)
    await store.publish("second", dt.date(2023, 4, 1), "t", "b", "https://e.eu", AREAS, "cli")
    [claim] = await store.claim(["telegram"], limit=1)
    await store.finish(claim.delivery_ids, DeliveryStatus.BLOCKED, error="bot was blocked")
    await store.deactivate(sub.id, "bot was blocked")
    assert (await store.subscription("telegram", "1")).active is False  # type: ignore[union-attr]
    assert await store.claim(["telegram"]) == []
    status = await store.status("second")
    assert status is not None and (status.blocked, status.pending) == (1, 0)
    await store.close()


async def test_a_digest_subscription_waits_for_its_day_and_gets_updates_together(
    database_url: str,
) -> None:
    store = await open_(database_url)
    await store.subscribe("telegram", "1", "private", None, digest=True)
    await publish(store)
    await store.publish("second", dt.date(2023, 4, 1), "t", "b", "https://e.eu", AREAS, "cli")
    assert await store.claim(["telegram"]) == []  # not due before Monday morning
    due = await store.next_due(["telegram"])
    assert due is not None and due > utcnow() and due.weekday() == 0 and due.hour == 8
    await store.close()


async def test_after_quiet_weeks_a_digest_still_waits_for_monday(database_url: str) -> None:
    """The digest date of a subscriber with nothing to receive stays where it was: an update
    after quiet weeks was due at that past Monday, so it went out at once, on any day."""
    store = await open_(database_url)
    sub = await store.subscribe("telegram", "1", "private", None, digest=True)
    async with store.session.begin() as session:
        row = await session.get(SubscriptionRow, sub.id)
        row.next_digest_at = utcnow() - dt.timedelta(days=17)  # type: ignore[union-attr]
    await publish(store)

    assert await store.claim(["telegram"]) == []
    due = await store.next_due(["telegram"])
    assert due is not None and due > utcnow() and due.weekday() == 0 and due.hour == 8
    await store.close()


async def test_a_report_is_done_once_what_is_due_now_is_sent(database_url: str) -> None:
    """A weekly subscriber's copy waits for Monday: counted apart, it no longer kept the
    moderator's live report "sending" (and edited every few seconds) for up to a week."""
    store = await open_(database_url)
    await store.subscribe("telegram", "1", "private", None)
    await store.subscribe("telegram", "2", "private", None, digest=True)
    await publish(store)
    [claim] = await store.claim(["telegram"])
    await store.finish(claim.delivery_ids, DeliveryStatus.SENT, message_id="5")

    status = await store.status("2023-03-01-adopted")
    assert status is not None and status.done
    assert (status.sent, status.pending, status.scheduled) == (1, 0, 1)
    await store.close()


async def test_one_vote_per_person_per_answer(database_url: str) -> None:
    store = await open_(database_url)
    qid = await store.record_question(
        "telegram", "who owns results?", None, "industry-academia", True, 0.6, ["JIA-D3"]
    )
    assert await store.record_vote(qid, "telegram:1", helpful=True)
    assert not await store.record_vote(qid, "telegram:1", helpful=False)
    assert await store.record_vote(qid, "telegram:2", helpful=False)
    assert not await store.record_vote(qid + 999, "telegram:1", helpful=True)
    assert await store.feedback_counts() == {True: 1, False: 1}
    await store.close()


async def test_forget_deletes_subscriptions_deliveries_and_votes(database_url: str) -> None:
    store = await open_(database_url)
    await store.subscribe("telegram", "1", "private", None)
    await store.subscribe("telegram", "2", "private", None)
    qid = await store.record_question("telegram", "q", None, None, False, None, [])
    await store.record_vote(qid, "telegram:1", helpful=False)
    await publish(store)
    assert await store.forget("telegram", "telegram:1", ["1"]) == 2
    assert await store.subscription("telegram", "1") is None
    status = await store.status("2023-03-01-adopted")
    assert status is not None and status.subscribers == 1
    assert await store.feedback_counts() == {}
    await store.close()


def test_plain_database_urls_get_their_async_driver() -> None:
    assert async_url("sqlite:///data/ipbot.db") == "sqlite+aiosqlite:///data/ipbot.db"
    assert async_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    with pytest.raises(StoreError, match="IPBOT_DATABASE_URL"):
        async_url("mysql://u@h/db")


async def test_questions_past_the_retention_period_are_purged_with_their_votes(
    database_url: str,
) -> None:
    store = await open_(database_url)
    old = await store.record_question("telegram", "old", None, None, False, None, [])
    await store.record_vote(old, "telegram:1", helpful=False)
    async with store.session.begin() as session:
        row = await session.get(QuestionRow, old)
        row.asked_at = utcnow() - dt.timedelta(days=91)  # type: ignore[union-attr]
    recent = await store.record_question("telegram", "new", None, None, True, 0.5, [])

    assert await store.purge_questions(dt.timedelta(days=90)) == 1
    assert await store.question(old) is None and await store.question(recent) is not None
    assert await store.feedback_counts() == {}
    await store.close()


async def test_the_first_votes_arriving_together_all_count(database_url: str) -> None:
    store = await open_(database_url)
    qid = await store.record_question("telegram", "q", None, None, True, 0.5, ["JIA-D3"])
    votes = await asyncio.gather(*(store.record_vote(qid, f"telegram:{n}", True) for n in range(8)))

    assert votes == [True] * 8
    assert await store.feedback_counts() == {True: 8}
    await store.close()


async def test_a_weekly_digest_claims_all_its_due_updates_as_one_message(
    database_url: str,
) -> None:
    store = await open_(database_url)
    sub = await store.subscribe("telegram", "1", "private", None, digest=True)
    await publish(store)
    await store.publish("second", dt.date(2023, 4, 1), "t", "b", "https://e.eu", AREAS, "cli")
    async with store.session.begin() as session:  # Monday morning has come
        row = await session.get(SubscriptionRow, sub.id)
        row.next_digest_at = utcnow() - dt.timedelta(minutes=1)  # type: ignore[union-attr]
        await session.execute(update(DeliveryRow).values(due_at=utcnow() - dt.timedelta(minutes=1)))

    claims = await store.claim(["telegram"], limit=1)

    assert len(claims) == 1 and claims[0].digest
    assert sorted(claims[0].update_ids) == ["2023-03-01-adopted", "second"]
    assert (await store.next_due(["telegram"])) is None, "the next digest waits for next week"
    await store.close()


async def test_questions_asked_together_share_one_commit_and_keep_their_own_ids(
    database_url: str,
) -> None:
    store = await open_(database_url)
    commits: list[object] = []
    event.listen(store.engine.sync_engine, "commit", commits.append)
    inserts: list[str] = []
    event.listen(
        store.engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: inserts.append(sql) if sql.startswith("INSERT") else None,
    )
    texts = [f"question {n}" for n in range(20)]

    ids = await asyncio.gather(
        *(store.record_question("telegram", t, None, None, False, None, []) for t in texts)
    )

    assert len(set(ids)) == 20, "two users were given the same question id"
    stored = [await store.question(qid) for qid in ids]
    assert [q.text if q else None for q in stored] == texts, "an id names another question"
    assert len(commits) == 1, "questions asked together were committed one by one"
    assert len(inserts) == 1, f"questions asked together took {len(inserts)} statements"
    await store.close()


async def test_a_question_that_cannot_be_stored_fails_alone(database_url: str) -> None:
    store = await open_(database_url)
    texts = ["who owns results?", "bad \ud800 text", "what is a patent?"]

    results = await asyncio.gather(
        *(store.record_question("telegram", t, None, None, False, None, []) for t in texts),
        return_exceptions=True,
    )

    assert isinstance(results[1], Exception), "a lone surrogate cannot be stored as UTF-8"
    good = [results[0], results[2]]
    assert all(isinstance(qid, int) for qid in good), results
    assert [(await store.question(qid)).text for qid in good] == [texts[0], texts[2]]  # type: ignore[union-attr,arg-type]
    await store.close()


async def test_closing_the_store_stores_questions_still_waiting(database_url: str) -> None:
    store = await open_(database_url)
    texts = [f"asked just before the stop {n}" for n in range(5)]
    asking = {
        asyncio.create_task(store.record_question("telegram", t, None, None, True, 0.5, []))
        for t in texts
    }
    await asyncio.sleep(0)  # the questions are handed over, not yet committed

    await store.close()
    unfinished = asking | (asyncio.all_tasks() - {asyncio.current_task()})
    for task in unfinished:  # the process ends after a clean stop: what runs is cancelled
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)

    reopened = await open_(database_url)
    stored = await reopened.questions_since(utcnow() - dt.timedelta(hours=1))
    assert [q.text for q in stored] == texts, "questions asked just before a stop were lost"
    await reopened.close()


async def test_a_starting_replica_leaves_another_replicas_running_reload_alone(
    database_url: str,
) -> None:
    """Every running request was failed by any replica that started: the moderator read
    "nothing changed" while the other replica made the new version live."""
    from sqlalchemy import update as sql_update

    from bot.refresh import ABANDONED_AFTER
    from bot.store.tables import RefreshRequestRow

    store = await open_(database_url)
    number = await store.request_refresh("reload", "", "telegram:1")
    assert await store.claim_refresh() is not None  # another replica is at work on it

    assert await store.abandon_refreshes(ABANDONED_AFTER) == 0
    running = await store.refresh_request(number)
    assert running is not None and running.status == "running"
    async with store.session.begin() as session:  # its process died long ago
        old = utcnow() - 2 * ABANDONED_AFTER
        await session.execute(sql_update(RefreshRequestRow).values(requested_at=old))
    assert await store.abandon_refreshes(ABANDONED_AFTER) == 1
    failed = await store.refresh_request(number)
    assert failed is not None and failed.status == "failed"
    await store.close()
