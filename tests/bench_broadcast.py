"""Broadcast throughput against the fake Bot API, next to the pacing limit it must respect.

Run with `python -m tests.bench_broadcast [SUBSCRIBERS]` (`make bench` runs it too). The fake
answers at once, so the figure shows the sender's own ceiling: pacing, claims and bookkeeping.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bot.sender import Pace, Sender, UpdateItem
from bot.settings import Settings
from bot.store import Store
from bot.telegram import TelegramOutlet
from tests.fakes.telegram_server import FakeTelegram
from tests.test_sender import UPDATE


async def broadcast(subscribers: int, pace: Pace) -> tuple[float, int]:
    """Seconds to deliver one update to every subscriber, and how many 429s the fake sent."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
        async with FakeTelegram() as telegram:
            telegram.flood_per_second = 30  # Telegram's documented overall limit
            for chat in range(subscribers):
                await store.subscribe("telegram", str(10_000 + chat), "private", None)
            item: UpdateItem = UPDATE
            await store.publish(
                item.id, item.date, item.title, item.body, item.url, ("valuation",), "bench"
            )
            settings = Settings(
                telegram_token=telegram.token, telegram_api_url=telegram.base_url, _env_file=None
            )
            outlet = TelegramOutlet(settings)
            sender = Sender(store, [outlet], item.areas, {"telegram": pace})
            start = time.perf_counter()
            task = asyncio.create_task(sender.run())
            while not (await store.status(item.id)).done:  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            sender.stop()
            await task
            floods = sum(
                1
                for c in telegram.calls_of("sendMessage")
                if c.error and c.error["error_code"] == 429
            )
        await store.close()
    return elapsed, floods


def main() -> None:
    subscribers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    pace = Pace()
    elapsed, floods = asyncio.run(broadcast(subscribers, pace))
    print(
        f"broadcast to {subscribers} Telegram subscribers: {elapsed:.1f} s, "
        f"{subscribers / elapsed:.1f} messages/s (pacing limit {pace.per_second:.0f}/s, "
        f"Telegram's limit about 30/s); 429 answers: {floods}"
    )


if __name__ == "__main__":
    main()
