"""Broadcasts on Discord through the real discord.py REST client against the fake Discord."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import update

from bot.discord import DiscordOutlet
from bot.sender import Pace, Sender
from bot.store import DeliveryStatus, Store
from bot.store.tables import DeliveryRow
from retrieval.search import Retriever
from tests.fakes.discord_server import FakeDiscord
from tests.test_discord import settings_for

pytestmark = pytest.mark.slow
UPDATE = "2023-03-01-adopted"
FAST = {"discord": Pace(per_second=200, concurrency=4)}


async def publish(store: Store) -> None:
    await store.publish(
        UPDATE,
        dt.date(2023, 3, 1),
        "Adopted",
        "The Code was adopted.",
        "https://e.eu",
        ("valuation",),
        "cli",
    )


async def settle(sender: Sender, timeout: float = 30) -> None:
    task = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(timeout):
            while not (await sender.store.status(UPDATE)).done:  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
    finally:
        sender.stop()
        await task


def outlet_for(fake: FakeDiscord) -> DiscordOutlet:
    return DiscordOutlet(settings_for(fake))


async def test_channels_dms_and_an_announcement_channel_each_get_one_copy(
    retriever: Retriever, store: Store
) -> None:
    fake = FakeDiscord()
    await fake.start()
    researcher = int(fake.researcher["id"])
    await store.subscribe("discord", str(fake.channel_id), "group", None)
    await store.subscribe("discord", str(researcher), "dm", None)
    await store.subscribe("discord", "777", "announcement", None)
    fake.blocked_channels = {fake.dm_channel_id}  # this user closed their DMs
    await publish(store)
    try:
        await settle(Sender(store, [outlet_for(fake)], retriever.corpus.areas, FAST))
    finally:
        await fake.stop()

    status = await store.status(UPDATE)
    assert status is not None and (status.sent, status.blocked) == (2, 1)
    assert fake.copies(fake.channel_id) == fake.copies(777) == 1
    assert len(fake.crossposted) == 1, "an announcement channel's post is published to followers"
    sent = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]
    assert all(c.body.get("enforce_nonce") and c.body.get("nonce") for c in sent)
    assert all(c.body["allowed_mentions"] == {"parse": []} for c in sent)


async def test_a_resend_after_a_crash_cannot_duplicate(retriever: Retriever, store: Store) -> None:
    fake = FakeDiscord()
    await fake.start()
    await store.subscribe("discord", str(fake.channel_id), "group", None)
    await publish(store)
    try:
        await settle(Sender(store, [outlet_for(fake)], retriever.corpus.areas, FAST))
        async with store.session.begin() as session:  # as a crash right after the send leaves it
            await session.execute(update(DeliveryRow).values(status=DeliveryStatus.SENDING))
        await settle(Sender(store, [outlet_for(fake)], retriever.corpus.areas, FAST))
    finally:
        await fake.stop()

    assert fake.copies(fake.channel_id) == 1, "the nonce must stop a second copy"
    status = await store.status(UPDATE)
    assert status is not None and status.sent == 1 and status.uncertain == 0


async def test_the_delivery_report_of_an_announce_confirmed_in_a_dm_reaches_that_dm(
    retriever: Retriever, store: Store
) -> None:
    """The report went to a channel with the moderator's user id, which Discord has not."""
    fake = FakeDiscord()
    await fake.start()
    moderator = fake.researcher["id"]
    await store.subscribe("discord", str(fake.channel_id), "group", None)
    await publish(store)
    await store.set_report(UPDATE, "discord", moderator, None, kind="dm")
    try:
        sender = Sender(store, [outlet_for(fake)], retriever.corpus.areas, FAST)
        await settle(sender)
        async with asyncio.timeout(10):
            while await store.reports_in_progress():
                await sender.refresh_reports(force=True)
    finally:
        await fake.stop()

    posts = [c.path for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]
    assert f"/channels/{fake.dm_channel_id}/messages" in posts
    assert f"/channels/{moderator}/messages" not in posts
