"""Shared fixtures: the real model, corpus and index, built once per test session."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.assistant import Assistant
from bot.sender import UpdateItem
from bot.store import Store
from retrieval.abstention import AbstentionPolicy
from retrieval.corpus import Area
from retrieval.search import Retriever, open_retriever

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "corpus"


REUSABLE = ROOT / ".test-cache"  # the model export and embedding caches between local runs
CACHED = ("models", "index/embedding-cache-*.npz", "index/multilingual/embedding-cache-*.npz")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh data folder, seeded with what the previous local run computed (never an index).

    Exporting the model and embedding the corpus take minutes on a busy machine and give the
    same result every time; the indexes themselves are still built by every session.
    """
    folder = tmp_path_factory.mktemp("ipbot-data")
    _copy_cached(REUSABLE, folder)
    yield folder
    if not os.environ.get("CI"):
        _copy_cached(folder, REUSABLE)


def _copy_cached(source: Path, target: Path) -> None:
    for pattern in CACHED:
        for found in source.glob(pattern):
            destination = target / found.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if found.is_dir():
                shutil.copytree(found, destination, dirs_exist_ok=True)
            else:
                shutil.copy2(found, destination)


@pytest.fixture(scope="session")
def retriever(data_dir: Path) -> Retriever:
    """The shipped corpus, the real MiniLM model and a real FAISS + BM25 index."""
    return open_retriever(CORPUS_DIR, data_dir, "all-MiniLM-L6-v2", policy=AbstentionPolicy())


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An empty embedded database, as `ipbot run` opens by default."""
    opened = await Store.open(f"sqlite:///{tmp_path / 'ipbot.db'}")
    yield opened
    await opened.close()


@pytest.fixture
def assistant(retriever: Retriever, store: Store) -> Assistant:
    """A fresh assistant (own rate limits and storage) over the shared retriever."""
    return Assistant(retriever, store, top_k=3, rate_limit_per_minute=1000)


def ipbot_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """The environment of an `ipbot` subprocess: this checkout, the built index, no stray IPBOT_."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPBOT_")}
    env.update(IPBOT_DATA_DIR=str(data_dir), IPBOT_CORPUS_DIR=str(CORPUS_DIR), PYTHONPATH=str(ROOT))
    return {**env, **variables}


@asynccontextmanager
async def ipbot_running(
    env: dict[str, str], folder: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`ipbot run` as a process, its output in `folder/ipbot.log`; killed if still alive after."""
    with (folder / "ipbot.log").open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            cwd=folder,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


POSTGRES_URL = os.environ.get("IPBOT_TEST_POSTGRES_URL")
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


async def fresh_database_url(engine: str, folder: Path) -> str:
    """An empty database: a SQLite file in `folder`, or a new database on the test server."""
    if engine == "sqlite":
        return f"sqlite:///{folder / 'ipbot.db'}"
    if not POSTGRES_URL:
        pytest.skip("IPBOT_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"ipbot_test_{os.getpid()}_{next(_DATABASE_NUMBERS)}"
    server = make_url(POSTGRES_URL)
    admin = await asyncpg.connect(
        host=server.host,
        port=server.port,
        user=server.username,
        password=server.password,
        database=server.database or "postgres",
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server.set(database=name).render_as_string(hide_password=False)


_DATABASE_NUMBERS = itertools.count()


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine ipbot supports (PostgreSQL when a server is given)."""
    return await fresh_database_url(request.param, tmp_path)


def long_digest(areas: tuple[Area, ...], count: int = 11) -> tuple[UpdateItem, ...]:
    """Updates of some 1,400 characters each: a weekly digest of them overflows one message."""
    return tuple(
        UpdateItem(f"u{n}", dt.date(2026, 1, n + 1), f"Update {n}", "Long news. " * 130,
                   f"https://example.org/{n}", areas)
        for n in range(count)
    )  # fmt: skip
