"""The HTTP side as a supervisor and Prometheus see it: a real aiohttp server on 127.0.0.1,
real requests, over the real assistant, store and index."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from bot.app import App
from bot.assistant import Assistant
from bot.http import Front, serving
from bot.metrics import Liveness
from bot.replies import AnswerReply, User
from bot.settings import Settings
from bot.store import Store
from bot.subscriptions import publish_update, update_items
from retrieval.search import Retriever
from tests.conftest import ENGINES, POSTGRES_URL, fresh_database_url
from tests.fakes.telegram_server import FakeTelegram
from tests.test_sender import broadcast, run_until_settled

QUESTION = "Who owns the results of a joint research project?"


def app_over(
    retriever: Retriever, store: Store, folder: Path, **settings: Any
) -> tuple[App, Assistant]:
    """An App as open_app wires it, over the session's retriever (no second model load)."""
    assistant = Assistant(retriever, store, rate_limit_per_minute=1000)
    config = Settings(data_dir=folder, _env_file=None, **settings)  # type: ignore[call-arg]
    return App(config, store, retriever, assistant), assistant


async def get(port: int, path: str) -> tuple[int, str, str]:
    """Status, Content-Type and body of a GET to the server on 127.0.0.1."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text; 0 if it is not there yet."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


@pytest_asyncio.fixture(loop_scope="function")
async def served(
    retriever: Retriever, store: Store, tmp_path: Path
) -> AsyncIterator[tuple[int, Assistant, App]]:
    app, assistant = app_over(retriever, store, tmp_path)
    async with serving(Front(app), "127.0.0.1", 0) as port:
        yield port, assistant, app


async def test_healthz_says_the_process_answers(served) -> None:
    port, _, _ = served
    assert await get_json(port, "/healthz") == (200, {"status": "ok"})


async def test_readyz_is_ready_with_the_index_loaded_and_the_database_reachable(served) -> None:
    port, _, _ = served
    status, body = await get_json(port, "/readyz")
    assert status == 200, body
    assert body["checks"] == {"index": "ok", "database": "ok"} and body["failed"] == []


async def make_database_disappear(url: str, store: Store) -> None:
    """The database goes away under a running ipbot: the server's database dropped, or the
    SQLite file replaced by something SQLite cannot open."""
    await store.engine.dispose()  # pooled connections would keep a deleted file alive
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        path.mkdir()
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed, server = make_url(url), make_url(POSTGRES_URL or "")
    admin = await asyncpg.connect(
        host=server.host, port=server.port, user=server.username, password=server.password
    )
    try:
        await admin.execute(f'DROP DATABASE "{parsed.database}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_readyz_is_503_naming_the_database_when_it_is_gone(
    engine: str, retriever: Retriever, tmp_path: Path
) -> None:
    url = await fresh_database_url(engine, tmp_path)
    store = await Store.open(url)
    app, _ = app_over(retriever, store, tmp_path, database_url=url)
    try:
        async with serving(Front(app), "127.0.0.1", 0) as port:
            await make_database_disappear(url, store)
            status, body = await get_json(port, "/readyz")
    finally:
        await store.close()
    assert status == 503, body
    assert body["failed"] == ["database"] and body["checks"]["index"] == "ok"
    assert body["checks"]["database"].startswith("unreachable")


async def test_readyz_waits_for_each_configured_platform_to_be_heard_from(
    retriever: Retriever, store: Store, tmp_path: Path
) -> None:
    app, _ = app_over(retriever, store, tmp_path, discord_token="fake-discord-token")
    liveness = Liveness()
    async with serving(Front(app, liveness=liveness), "127.0.0.1", 0) as port:
        before = await get_json(port, "/readyz")
        liveness.seen("discord")
        after = await get_json(port, "/readyz")
    assert before[0] == 503 and before[1]["failed"] == ["discord"], before
    assert before[1]["checks"]["discord"] == "not connected yet"
    assert after[0] == 200, after


async def test_metrics_count_a_question_asked_through_the_real_assistant(served) -> None:
    port, assistant, _ = served
    _, content_type, before = await get(port, "/metrics")

    reply = await assistant.ask(User("console", "metrics-user"), QUESTION)
    assert isinstance(reply, AnswerReply) and reply.question_id is not None
    assert reply.answer.area is not None
    labels = {"platform": "console", "area": reply.answer.area.slug, "answered": "true"}
    await assistant.vote(User("console", "metrics-user"), reply.question_id, True)
    _, _, after = await get(port, "/metrics")

    assert content_type.startswith("text/plain; version=")
    asked = sample(after, "ipbot_questions_total", **labels) - sample(
        before, "ipbot_questions_total", **labels
    )
    timed = sample(after, "ipbot_answer_seconds_count", platform="console") - sample(
        before, "ipbot_answer_seconds_count", platform="console"
    )
    votes = sample(after, "ipbot_feedback_votes_total", helpful="true") - sample(
        before, "ipbot_feedback_votes_total", helpful="true"
    )
    assert (asked, timed, votes) == (1, 1, 1), after
    corpus = assistant.retriever.corpus
    assert sample(after, "ipbot_index_info", corpus_version=corpus.version) == 1
    assert sample(after, "ipbot_index_age_seconds") > 0


@pytest.mark.slow
async def test_metrics_show_the_outbox_pending_then_each_delivery_by_result(
    retriever: Retriever, store: Store, tmp_path: Path
) -> None:
    app, _ = app_over(retriever, store, tmp_path)
    async with FakeTelegram() as telegram, serving(Front(app), "127.0.0.1", 0) as port:
        telegram.blocked.add(2002)
        sender = await broadcast(store, telegram, [2001, 2002])
        _, _, queued = await get(port, "/metrics")
        await run_until_settled(sender)
        _, _, settled = await get(port, "/metrics")

    def sent(text: str, result: str) -> float:
        return sample(text, "ipbot_broadcast_deliveries_total", platform="telegram", result=result)

    assert sample(queued, "ipbot_outbox_pending", platform="telegram") == 2
    assert sample(settled, "ipbot_outbox_pending", platform="telegram") == 0
    assert sent(settled, "delivered") - sent(queued, "delivered") == 1
    assert sent(settled, "blocked") - sent(queued, "blocked") == 1


async def test_published_atom_feeds_are_served_and_nothing_else_of_the_data_folder(
    served, store: Store, tmp_path: Path
) -> None:
    port, assistant, _ = served
    corpus = assistant.retriever.corpus
    item = update_items(corpus)["2024-03-01-codes-co-creation-and-citizen-engagement"]
    await publish_update(store, item, "cli", (tmp_path / "feeds", corpus))

    status, content_type, feed = await get(port, "/feeds/all.xml")
    database = await get(port, "/feeds/..%2Fipbot.db")
    missing = await get(port, "/feeds/nothing.xml")

    assert status == 200 and content_type.startswith("application/atom+xml")
    assert item.title in feed
    assert database[0] == 404 and missing[0] == 404


async def test_a_feed_shows_an_update_another_replica_published(served, store: Store) -> None:
    """Feed files are this replica's; an update published elsewhere (no files written here)
    was missing from them until a restart or a new corpus version."""
    port, assistant, _ = served
    item = update_items(assistant.retriever.corpus)["2023-03-01-code-of-practice-adopted"]
    await publish_update(store, item, "cli", None)  # as another replica or machine does

    status, _, feed = await get(port, "/feeds/all.xml")
    assert status == 200 and item.title in feed
