"""Two `ipbot run` replicas on one PostgreSQL database, as an operator scales out.

Both receive Telegram by webhook (the fake posts to each, as a load balancer would), share one
corpus folder but not their data folders (the build files travel through the database), and
hold the jobs that must run once (the broadcast sender, the Discord gateway) by advisory lock.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from bot.store import Store
from retrieval.corpus import load_corpus
from tests.conftest import CORPUS_DIR, fresh_database_url, ipbot_env
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import USER_ID, FakeTelegram
from tests.test_refresh import EVAL, MTA_QUESTION
from tests.test_runner import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]
SECRET = "replica-webhook-secret-0123456789"
PATH = "/telegram/ipbot"
QUESTION = "How does the cost approach value a patent?"
SUBSCRIBERS = 1000


@dataclass
class Replica:
    """One `ipbot run` process and its HTTP port."""

    name: str
    folder: Path
    port: int
    process: asyncio.subprocess.Process | None = None

    async def post(self, update: dict[str, Any]) -> int:
        """POST an update to this replica's webhook, as Telegram (or a load balancer) does."""
        url = f"http://127.0.0.1:{self.port}{PATH}"
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=update, headers=headers) as response,
        ):
            return response.status

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.port}{path}") as response,
            ):
                return response.status, await response.text()
        except aiohttp.ClientError:
            return 0, ""

    async def readiness(self) -> dict[str, Any]:
        status, body = await self.get("/readyz")
        return yaml.safe_load(body) if status else {}

    async def runs(self) -> list[str]:
        return list((await self.readiness()).get("runs", []))

    def log(self) -> str:
        return (self.folder / "ipbot.log").read_text(errors="replace")[-3000:]


@dataclass
class Cluster:
    a: Replica
    b: Replica
    telegram: FakeTelegram
    discord: FakeDiscord
    corpus: Path
    database: str

    @property
    def replicas(self) -> list[Replica]:
        return [self.a, self.b]


async def start(replica: Replica, env: dict[str, str]) -> None:
    """Start `ipbot run` and wait until it takes webhook updates (readyz: Telegram ok)."""
    sink = (replica.folder / "ipbot.log").open("wb")
    replica.process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=replica.folder, env=env,
        stdout=sink, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        checks = (await replica.readiness()).get("checks", {})
        if checks.get("telegram") == "ok" and checks.get("index") == "ok":
            return
        if replica.process.returncode is not None:
            break
        await asyncio.sleep(0.5)
    raise AssertionError(f"replica {replica.name} did not start:\n{replica.log()}")


def environment(
    cluster_dir: Path, data: Path, port: int, database: str, tg: FakeTelegram, dc: FakeDiscord
) -> dict[str, str]:
    return ipbot_env(
        data,
        IPBOT_CORPUS_DIR=str(cluster_dir / "corpus"),
        IPBOT_EVAL_FILE=str(cluster_dir / "eval.yaml"),
        IPBOT_DATABASE_URL=database,
        IPBOT_MULTILINGUAL="false",
        IPBOT_HTTP_PORT=str(port),
        IPBOT_TELEGRAM_TOKEN=tg.token,
        IPBOT_TELEGRAM_API_URL=tg.base_url,
        IPBOT_TELEGRAM_WEBHOOK_URL=f"https://ipbot.example.org{PATH}",
        IPBOT_TELEGRAM_WEBHOOK_SECRET=SECRET,
        IPBOT_DISCORD_TOKEN="fake-discord-token",
        IPBOT_DISCORD_API_URL=dc.api_url,
        IPBOT_DISCORD_GATEWAY_URL=dc.gateway_url,
        IPBOT_MODERATORS=f"telegram:{USER_ID}",
        IPBOT_RATE_LIMIT_PER_MINUTE="100000",
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    """Replica A started first (it takes the jobs), then B; each with a data folder of its own."""
    root = tmp_path_factory.mktemp("replicas")
    corpus = root / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS_DIR / "valuation.md", corpus)
    (corpus / "VERSION").write_text("replicas-1\n")
    (root / "eval.yaml").write_text(yaml.safe_dump(EVAL))
    database = await fresh_database_url("postgresql", root)
    discord = FakeDiscord()
    await discord.start()
    async with FakeTelegram() as telegram:
        replicas = []
        for name in "ab":
            folder = root / name
            data = folder / "data"
            data.mkdir(parents=True)
            (data / "models").symlink_to(data_dir / "models", target_is_directory=True)
            replica = Replica(name, folder, free_port())
            env = environment(root, data, replica.port, database, telegram, discord)
            await start(replica, env)
            replicas.append(replica)
        try:
            yield Cluster(*replicas, telegram, discord, corpus, database)
        finally:
            for replica in replicas:
                if replica.process is not None and replica.process.returncode is None:
                    replica.process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(replica.process.wait(), 20)
                    except TimeoutError:
                        replica.process.kill()
    await discord.stop()


def answers(telegram: FakeTelegram, chat: int) -> list[Any]:
    return [
        c for c in telegram.calls_of("sendMessage") if int(c.params["chat_id"]) == chat and c.ok
    ]


async def settled(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.2)
    return bool(await condition())


async def test_one_discord_gateway_and_one_sender_while_both_run(cluster: Cluster) -> None:
    await asyncio.sleep(4)  # longer than a standby's retry: it would have connected by now
    a, b = await cluster.a.runs(), await cluster.b.runs()
    assert set(a) == {"discord-gateway", "sender"} and b == [], (a, b)
    assert cluster.discord.identifies == 1 and cluster.discord.most_connections == 1
    ready_b = await cluster.b.readiness()
    assert ready_b["ready"] and ready_b["checks"]["discord"] == "standby", ready_b
    # only one replica registered the webhook and the command menu
    assert len(cluster.telegram.calls_of("setWebhook")) == 1
    assert len(cluster.telegram.calls_of("setMyCommands")) == 1


async def test_every_replica_answers_and_an_update_posted_to_both_is_answered_once(
    cluster: Cluster,
) -> None:
    telegram = cluster.telegram
    chats = {"a": 7001, "b": 7002, "both": list(range(7010, 7022))}
    assert await cluster.a.post(telegram.private_update(QUESTION, chats["a"])) == 200
    assert await cluster.b.post(telegram.private_update(QUESTION, chats["b"])) == 200
    for chat in chats["both"]:  # the same update reaches both replicas at the same time
        update = telegram.private_update(QUESTION, chat)
        statuses = await asyncio.gather(cluster.a.post(update), cluster.b.post(update))
        assert statuses == [200, 200]
    everyone = [chats["a"], chats["b"], *chats["both"]]
    assert await settled(lambda: _all_answered(telegram, everyone))
    await asyncio.sleep(2)  # time for a second answer, were one coming
    counts = {chat: len(answers(telegram, chat)) for chat in everyone}
    assert set(counts.values()) == {1}, counts
    assert all("<a href=" in answers(telegram, c)[0].text for c in everyone)


async def _all_answered(telegram: FakeTelegram, chats: list[int]) -> bool:
    return all(answers(telegram, chat) for chat in chats)


async def test_a_button_on_an_answer_from_a_works_when_the_press_reaches_b(
    cluster: Cluster,
) -> None:
    telegram, chat = cluster.telegram, 7100
    await cluster.a.post(telegram.private_update(QUESTION, chat))
    assert await settled(lambda: _all_answered(telegram, [chat]))
    [answer] = answers(telegram, chat)
    press = telegram.update(**telegram.press_update(answer.result, "Sources", chat))
    assert await cluster.b.post(press) == 200
    assert await settled(lambda: _count_is(telegram, chat, 2))
    sources = answers(telegram, chat)[1]
    assert "<blockquote expandable>" in sources.text, sources.text[:300]


async def _count_is(telegram: FakeTelegram, chat: int, count: int) -> bool:
    return len(answers(telegram, chat)) >= count


async def test_a_reload_on_a_is_served_by_b_within_seconds_without_a_shared_disk(
    cluster: Cluster,
) -> None:
    telegram = cluster.telegram
    shutil.copy(CORPUS_DIR / "industry-academia.md", cluster.corpus)
    (cluster.corpus / "VERSION").write_text("replicas-2\n")
    await cluster.a.post(telegram.private_update("/reload", USER_ID))
    assert await settled(lambda: _reload_done(telegram), timeout=240), cluster.a.log()
    summary = [c.text for c in answers(telegram, USER_ID) if "now live" in c.text]
    assert summary, [c.text for c in answers(telegram, USER_ID)]
    live_at = time.monotonic()
    assert await settled(lambda: _serves(cluster.b, "replicas-2"), timeout=15), cluster.b.log()
    took = time.monotonic() - live_at
    assert not (Path(cluster.b.folder) / "data" / "index" / "builds").is_symlink()
    titles = {p.title for p in load_corpus(CORPUS_DIR).passages if p.id in ("JIA-D7", "JIA-R13")}
    chat = 7200
    await cluster.b.post(telegram.private_update(MTA_QUESTION, chat))
    assert await settled(lambda: _all_answered(telegram, [chat]))
    answer = answers(telegram, chat)[0].text
    assert any(_escaped(t) in answer for t in titles), answer[:500]
    assert took < 15
    assert "fetched version" in cluster.b.log()  # from the database: B never built it


def _escaped(text: str) -> str:
    from html import escape

    return escape(text, quote=False)


async def _reload_done(telegram: FakeTelegram) -> bool:
    return any("now live" in c.text or "held" in c.text for c in answers(telegram, USER_ID))


async def _serves(replica: Replica, corpus_version: str) -> bool:
    status, body = await replica.get("/metrics")
    return status == 200 and f'corpus_version="{corpus_version}"' in body


async def test_a_broadcast_survives_the_death_of_its_sender_and_nobody_gets_two_copies(
    cluster: Cluster,
) -> None:
    telegram = cluster.telegram
    telegram.send_latency = 0.02  # sends in flight when the holder dies
    store = await Store.open(cluster.database)
    try:
        first = 20_000
        for chat in range(first, first + SUBSCRIBERS):
            await store.subscribe("telegram", str(chat), "private", None)
        await store.publish(
            "2026-11-30-replicas", _today(), "Replicas", "News for everyone.",
            "https://research-and-innovation.ec.europa.eu/", ("valuation",), "test",
        )  # fmt: skip
        holder = [r for r in cluster.replicas if "sender" in await r.runs()][0]
        other = cluster.b if holder is cluster.a else cluster.a
        assert await settled(lambda: _sent_to(telegram, first, 150), timeout=60)
        assert holder.process is not None
        holder.process.send_signal(signal.SIGKILL)
        await holder.process.wait()
        killed_at = _sends(telegram, first)
        assert await settled(lambda: _done(store, "2026-11-30-replicas"), timeout=180), other.log()
        status = await store.status("2026-11-30-replicas")
        assert status is not None
        assert "sender" in await other.runs()
        copies = [telegram.copies(chat) for chat in range(first, first + SUBSCRIBERS)]
        assert max(copies) == 1, "a subscriber got two copies"
        assert status.sent + status.uncertain == SUBSCRIBERS, status
        assert status.uncertain <= 8  # only the sends in flight when the holder died
        assert sum(copies) >= status.sent and sum(copies) <= SUBSCRIBERS
        assert status.sent > killed_at, "the other replica delivered the rest"
        # the Discord gateway moved too, and still only one connection at a time
        assert await settled(lambda: _identified(cluster.discord, 2), timeout=30)
        assert cluster.discord.most_connections == 1
    finally:
        await store.close()


def _today():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.date(2026, 11, 30)


def _sends(telegram: FakeTelegram, first: int) -> int:
    return sum(
        1 for c in telegram.calls_of("sendMessage") if c.ok and int(c.params["chat_id"]) >= first
    )


async def _sent_to(telegram: FakeTelegram, first: int, count: int) -> bool:
    return _sends(telegram, first) >= count


async def _done(store: Store, update: str) -> bool:
    status = await store.status(update)
    return status is not None and status.done


async def _identified(discord: FakeDiscord, count: int) -> bool:
    return discord.identifies >= count
