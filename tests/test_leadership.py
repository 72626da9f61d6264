"""Leases: jobs that must run in one process at a time hold a PostgreSQL advisory lock, and
another process takes over when the holder's session ends, however it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.leadership import once_among_replicas, while_leading
from bot.store import Store
from tests.conftest import fresh_database_url

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def two_processes(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one PostgreSQL database, as two replicas have them."""
    url = await fresh_database_url("postgresql", tmp_path)
    first, second = await Store.open(url), await Store.open(url)
    yield first, second
    await first.close()
    await second.close()


@pytest.mark.postgres
async def test_one_holder_at_a_time_and_the_next_takes_over_when_it_lets_go(
    two_processes: tuple[Store, Store],
) -> None:
    first, second = two_processes
    async with first.lease("sender") as held:
        assert held is not None
        async with second.lease("sender") as other:
            assert other is None
        async with second.lease("discord-gateway") as different_job:
            assert different_job is not None
    async with second.lease("sender") as now:
        assert now is not None


@pytest.mark.postgres
async def test_a_holder_whose_session_dies_learns_it_and_the_job_moves(
    two_processes: tuple[Store, Store],
) -> None:
    first, second = two_processes
    async with first.lease("sender") as held:
        assert held is not None
        async with second.engine.connect() as admin:  # the server ends the holder's session
            await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
                )
            )
            await admin.commit()
        await asyncio.wait_for(held.wait(), 10)
        async with second.lease("sender") as taken:
            assert taken is not None


@pytest.mark.postgres
async def test_while_leading_runs_the_job_in_one_process_and_hands_it_over(
    two_processes: tuple[Store, Store],
) -> None:
    first, second = two_processes
    running: list[str] = []

    def job(name: str):  # type: ignore[no-untyped-def]
        async def run(end: asyncio.Event) -> None:
            running.append(name)
            await end.wait()
            running.remove(name)

        return run

    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(while_leading(first, "sender", job("a"), stop_first, retry=0.2))
    await asyncio.sleep(0.5)
    b = asyncio.create_task(while_leading(second, "sender", job("b"), stop_second, retry=0.2))
    await asyncio.sleep(1)
    assert running == ["a"]
    stop_first.set()
    await asyncio.wait_for(a, 5)
    for _ in range(50):
        if running == ["b"]:
            break
        await asyncio.sleep(0.1)
    assert running == ["b"]
    stop_second.set()
    await asyncio.wait_for(b, 5)
    assert running == []


@pytest.mark.postgres
async def test_set_up_happens_once_per_configuration(two_processes: tuple[Store, Store]) -> None:
    first, second = two_processes
    done: list[str] = []
    for store, config in ((first, "v1"), (second, "v1"), (second, "v2"), (first, "v2")):
        async with once_among_replicas(store, "telegram-setup", config) as due:
            if due:
                done.append(config)
    assert done == ["v1", "v2"]


async def test_the_one_sqlite_process_holds_every_job(store: Store) -> None:
    async with store.lease("sender") as held, store.lease("sender") as again:
        assert held is not None and again is not None


async def test_a_failing_job_propagates_for_supervision(store: Store) -> None:
    async def broken(end: asyncio.Event) -> None:
        raise RuntimeError("the platform broke")

    with pytest.raises(RuntimeError, match="platform broke"):
        await asyncio.wait_for(while_leading(store, "discord-gateway", broken, asyncio.Event()), 5)
