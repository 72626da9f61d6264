"""Shared fixtures: the real model, corpus and index, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.assistant import Assistant
from retrieval.search import AbstentionPolicy, Retriever, open_retriever

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
