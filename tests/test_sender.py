"""Broadcasts through the real python-telegram-bot against the fake Bot API: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from bot.sender import Pace, Sender, UpdateItem
from bot.settings import load_settings
from bot.store import Store
from bot.telegram import TelegramOutlet
from retrieval.corpus import Area
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.slow
UPDATE = UpdateItem(
    id="2023-03-01-adopted",
    date=dt.date(2023, 3, 1),
    title="The Code of Practice is adopted <officially>",
    body="Recommendation (EU) 2023/499 & its Code of Practice were adopted on 1 March 2023.",
    url="https://eur-lex.europa.eu/eli/reco/2023/499/oj",
    areas=(Area("valuation", "IP valuation", "Worth"),),
)
FAST = Pace(per_second=150, per_chat_seconds=1.0, per_group_minute=20, concurrency=8)


async def broadcast(store: Store, telegram: FakeTelegram, chats: list[int]) -> Sender:
    for chat in chats:
        kind = "group" if chat < 0 else "private"
        await store.subscribe("telegram", str(chat), kind, None)
    await store.publish(
        UPDATE.id, UPDATE.date, UPDATE.title, UPDATE.body, UPDATE.url, ("valuation",), "cli"
    )
    settings = load_settings(telegram_token=telegram.token, telegram_api_url=telegram.base_url)
    outlet = TelegramOutlet(settings)
    return Sender(store, [outlet], UPDATE.areas, {"telegram": FAST})


async def run_until_settled(sender: Sender, timeout: float = 120) -> None:
    """Deliver until every row is settled and every live report shows the final figures."""
    task = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(timeout):
            while not (await sender.store.status(UPDATE.id)).done:  # type: ignore[union-attr]
                await asyncio.sleep(0.2)
            while await sender.store.reports_in_progress():
                await asyncio.sleep(0.2)
    finally:
        sender.stop()
        await task


async def test_a_thousand_subscribers_get_exactly_one_copy_despite_flood_control_and_faults(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    chats = list(range(5000, 6000))
    async with FakeTelegram() as telegram:
        telegram.flood_per_second = 50  # under the pace of 150/s, so floods happen on any machine
        telegram.blocked = set(chats[::50])
        telegram.server_errors = set(range(3, 1000, 97))
        sender = await broadcast(store, telegram, chats)
        await run_until_settled(sender)
        copies = {chat: telegram.copies(chat) for chat in chats}
    assert sum(
        1 for c in telegram.calls_of("sendMessage") if c.error and c.error["error_code"] == 429
    )
    duplicated = [chat for chat, n in copies.items() if n > 1]
    missing = [chat for chat, n in copies.items() if n == 0 and chat not in telegram.blocked]
    assert not duplicated, f"{len(duplicated)} subscribers received the update twice"
    assert not missing, f"{len(missing)} subscribers never received the update"
    status = await store.status(UPDATE.id)
    assert status is not None
    assert (status.sent, status.blocked, status.pending, status.uncertain) == (980, 20, 0, 0)
    blocked = await store.subscription("telegram", str(chats[0]))
    assert blocked is not None and not blocked.active
    await store.close()


async def test_a_group_that_became_a_supergroup_gets_the_update_at_its_new_id(
    tmp_path: Path,
) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'ipbot.db'}")
    async with FakeTelegram() as telegram:
        telegram.migrated = {-100: -1009999}
        sender = await broadcast(store, telegram, [-100])
        await run_until_settled(sender, timeout=30)
        assert telegram.copies(-1009999) == 1
    moved = await store.subscription("telegram", "-1009999")
    assert moved is not None and moved.active
    await store.close()


async def test_a_group_moved_to_a_supergroup_that_is_subscribed_already_gets_one_copy(
    tmp_path: Path,
) -> None:
    """An administrator had subscribed the new supergroup too: moving the old subscription
    there broke the unique chat and left the delivery "sending" for good."""
    store = await Store.open(f"sqlite:///{tmp_path / 'ipbot.db'}")
    async with FakeTelegram() as telegram:
        telegram.migrated = {-100: -1009999}
        sender = await broadcast(store, telegram, [-100, -1009999])
        await run_until_settled(sender, timeout=30)
        assert telegram.copies(-1009999) == 1
    status = await store.status(UPDATE.id)
    assert status is not None and (status.sent, status.pending) == (1, 0)
    old = await store.subscription("telegram", "-100")
    assert old is not None and not old.active
    await store.close()


async def test_the_publishing_moderator_sees_one_report_edited_until_done(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'ipbot.db'}")
    async with FakeTelegram() as telegram:
        sender = await broadcast(store, telegram, list(range(10, 30)))
        await store.set_report(UPDATE.id, "telegram", "1", None)
        await run_until_settled(sender, timeout=30)
        reports = telegram.copies(1)
        final = [m for (chat, _), m in telegram.messages.items() if chat == 1]
    assert reports == 1, "the report must be one message, edited, not a new one each time"
    assert "Sent: 20" in final[0]["text"] and "(done)" in final[0]["text"]
    await store.close()


async def test_a_stop_signal_lets_sends_in_flight_finish_and_leaves_nothing_uncertain(
    tmp_path: Path,
) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'ipbot.db'}")
    async with FakeTelegram() as telegram:
        telegram.send_latency = 0.3
        sender = await broadcast(store, telegram, list(range(100, 300)))
        task = asyncio.create_task(sender.run())
        while not telegram.calls_of("sendMessage"):
            await asyncio.sleep(0.05)
        sender.stop()
        await task
        delivered = sum(telegram.copies(chat) for chat in range(100, 300))
    status = await store.status(UPDATE.id)
    assert status is not None
    assert status.uncertain == 0 and status.sent == delivered > 0
    assert status.sent + status.pending == 200
    await store.close()


async def test_the_sender_outlives_a_database_outage(tmp_path: Path) -> None:
    """The database failing at every step (settling a crash, a round, asking when the next
    delivery is due) must not end the sender: once it is back, the update goes out."""
    store = await Store.open(f"sqlite:///{tmp_path / 'ipbot.db'}")
    async with FakeTelegram() as telegram:
        sender = await broadcast(store, telegram, [101, 102])
        failures = {"recover": 2, "next_due": 3, "claim": 3}
        for name in failures:
            real = getattr(store, name)

            async def failing(*args, _name=name, _real=real, **kwargs):
                if failures[_name] > 0:
                    failures[_name] -= 1
                    raise ConnectionError("database unreachable")
                return await _real(*args, **kwargs)

            setattr(store, name, failing)
        await run_until_settled(sender, timeout=60)
        assert telegram.copies(101) == telegram.copies(102) == 1
        assert failures == {"recover": 0, "next_due": 0, "claim": 0}
    await store.close()
