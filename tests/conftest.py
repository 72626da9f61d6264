"""Shared fixtures: the real model, corpus and index, built once per test session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.assistant import Assistant
from retrieval.abstention import AbstentionPolicy
from retrieval.search import Retriever, open_retriever

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "corpus"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ipbot-data")


@pytest.fixture(scope="session")
def retriever(data_dir: Path) -> Retriever:
    """The shipped corpus, the real MiniLM model and a real FAISS + BM25 index."""
    return open_retriever(CORPUS_DIR, data_dir, "all-MiniLM-L6-v2", policy=AbstentionPolicy())


@pytest.fixture
def assistant(retriever: Retriever) -> Assistant:
    """A fresh assistant (own rate limits and feedback) over the shared retriever."""
    return Assistant(retriever, top_k=3, rate_limit_per_minute=1000)


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
