"""Personal notices through the outbox: queued once, delivered once, on both engines and platforms."""

from __future__ import annotations

import asyncio
import html

import pytest
from sqlalchemy import update

from bot.discord import DiscordOutlet
from bot.sender import Pace, PersonalMessage, Sender
from bot.settings import load_settings
from bot.store import NOTICES, DeliveryStatus, Store
from bot.store.tables import NoticeRow
from bot.telegram import TelegramOutlet
from retrieval.corpus import Passage
from retrieval.search import Hit
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram
from tests.test_discord import settings_for

FAST = Pace(per_second=200, concurrency=4)


PASSAGE = Passage(
    id="VAL-R1",
    area="valuation",
    kind="recommendation",
    title="Value intellectual assets early",
    text="Estimate what an intellectual asset is worth early & revisit the estimate later.",
    citation="Recommendation (EU) 2023/499, Code of Practice - IP valuation",
    url="https://eur-lex.europa.eu/eli/reco/2023/499/oj",
)
COVERED = PersonalMessage(
    "covered", "Your question is now covered <yes>.", "In short: yes.", (Hit(PASSAGE, 1.0, ""),)
)


async def unsettled(store: Store, keys: list[str]) -> bool:
    return any([await store.notice_status(k) in ("pending", "sending") for k in keys])


async def settle(sender: Sender, keys: list[str], timeout: float = 30) -> None:
    """Deliver until every notice named is settled (sent, blocked, failed or uncertain)."""
    task = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(timeout):
            while await unsettled(sender.store, keys):
                await asyncio.sleep(0.1)
    finally:
        sender.stop()
        await task


async def test_the_same_notice_is_queued_once(database_url: str) -> None:
    store = await Store.open(database_url)
    assert await store.enqueue_notice("telegram", "7", "covered", "Hello", "covered:1:telegram:7")
    again = await store.enqueue_notice("telegram", "7", "covered", "Hi", "covered:1:telegram:7")
    assert not again, "a second notice with the same key must not be queued"
    claims = await store.claim(["telegram"])
    assert [(c.chat_id, c.notice) for c in claims] == [("7", "Hello")]
    await store.close()


async def test_notices_are_claimed_before_updates_and_recovered_like_them(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    await store.enqueue_notice("telegram", "1", "covered", "to telegram", "a")
    await store.enqueue_notice("discord", "2", "covered", "to discord", "b")
    claims = await store.claim(["telegram", "discord"])
    assert {c.outbox for c in claims} == {NOTICES}
    assert {c.kind for c in claims} == {"private", "dm"}, "a person's own chat on each platform"
    assert await store.claim(["telegram", "discord"]) == [], "claimed rows are `sending`"
    assert await store.recover(["telegram", "discord"], resendable=["discord"]) == 1
    assert await store.notice_status("a") == DeliveryStatus.UNCERTAIN
    [again] = await store.claim(["telegram", "discord"])
    assert again.platform == "discord" and again.notice == "to discord"
    await store.close()


async def test_a_personal_notice_reaches_telegram_once_with_its_cited_passages(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    message = COVERED
    async with FakeTelegram() as telegram:
        telegram.blocked = {66}
        await store.enqueue_notice("telegram", "55", "covered", message.stored(), "n55")
        await store.enqueue_notice("telegram", "66", "covered", message.stored(), "n66")
        settings = load_settings(telegram_token=telegram.token, telegram_api_url=telegram.base_url)
        sender = Sender(store, [TelegramOutlet(settings)], (), {"telegram": FAST})
        await settle(sender, ["n55", "n66"])
        [sent] = [m for (chat, _), m in telegram.messages.items() if chat == 55]
    text = html.unescape(sent["text"])
    passage = message.hits[0].passage
    assert "Your question is now covered <yes>." in text and "In short: yes." in text
    assert passage.title in text and passage.citation[:40] in text
    assert await store.notice_status("n55") == DeliveryStatus.SENT
    assert await store.notice_status("n66") == DeliveryStatus.BLOCKED
    await store.close()


async def test_a_discord_notice_goes_to_the_persons_dm_and_a_resend_cannot_duplicate(
    store: Store,
) -> None:
    fake = FakeDiscord()
    await fake.start()
    researcher = fake.researcher["id"]
    stored = COVERED.stored()
    await store.enqueue_notice("discord", str(researcher), "covered", stored, "d1")
    try:
        outlet = DiscordOutlet(settings_for(fake))
        await settle(Sender(store, [outlet], (), {"discord": FAST}), ["d1"])
        async with store.session.begin() as session:  # as a crash right after the send leaves it
            await session.execute(update(NoticeRow).values(status=DeliveryStatus.SENDING))
        outlet = DiscordOutlet(settings_for(fake))
        await settle(Sender(store, [outlet], (), {"discord": FAST}), ["d1"])
    finally:
        await fake.stop()
    assert fake.copies(fake.dm_channel_id) == 1, "the nonce must stop a second copy"
    [dm] = [m for m in fake.messages.values() if int(m["channel_id"]) == fake.dm_channel_id]
    assert dm["embeds"][0]["fields"][0]["name"].startswith("1. ")
    assert await store.notice_status("d1") == DeliveryStatus.SENT


@pytest.mark.parametrize("stored", ["plain words", '{"kind": "x", "text": "json words"}'])
def test_a_stored_notice_reads_back_as_it_was_queued(stored: str) -> None:
    message = PersonalMessage.from_stored(stored)
    assert message.text in ("plain words", "json words") and message.hits == ()
