"""`ipbot bench`: the speed and memory figures recorded in docs/performance.md.

A benchmark prints numbers for a person to compare with the targets; it asserts nothing, so a
busy machine never fails a build.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bot.assistant import Assistant, User, configured_retriever
from bot.settings import Settings
from bot.store import Store
from retrieval.corpus import load_corpus
from retrieval.evaluate import DEFAULT_EVAL_FILE
from retrieval.index import IndexStore, Progress
from retrieval.search import Retriever

CONCURRENCY = 32


def bench_questions() -> list[str]:
    data = yaml.safe_load(DEFAULT_EVAL_FILE.read_text(encoding="utf-8"))
    return [q["q"] for q in data["questions"]] + list(data["off_topic"])


def cold_start(settings: Settings) -> tuple[float, float]:
    """Seconds from process start to the first printed answer, and that process's peak RSS."""
    env = {
        **os.environ,
        "IPBOT_DATA_DIR": str(settings.data_dir),
        "IPBOT_CORPUS_DIR": str(settings.corpus_dir),
    }
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bot.cli", "ask", "--json", "who owns joint results?"],
        check=True,
        capture_output=True,
        env=env,
    )
    elapsed = time.perf_counter() - start
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def warm_latency(retriever: Retriever, questions: list[str], count: int) -> list[float]:
    """Milliseconds per question, one at a time, in a process that has answered before."""
    retriever.answer(questions[0])
    timings = []
    for i in range(count):
        start = time.perf_counter()
        retriever.answer(questions[i % len(questions)])
        timings.append((time.perf_counter() - start) * 1000)
    return timings


async def concurrent_throughput(
    assistant: Assistant, questions: list[str], rounds: int = 8
) -> float:
    """Questions per second when 32 users ask at once (the embedding is micro-batched)."""
    users = [User("bench", str(i)) for i in range(CONCURRENCY)]
    await assistant.ask(users[0], questions[0])
    start = time.perf_counter()
    for r in range(rounds):
        batch = [questions[(r * CONCURRENCY + i) % len(questions)] for i in range(CONCURRENCY)]
        await asyncio.gather(*(assistant.ask(u, q) for u, q in zip(users, batch, strict=True)))
    return rounds * CONCURRENCY / (time.perf_counter() - start)


async def throughput_with_store(retriever: Retriever, questions: list[str]) -> float:
    """The concurrent figure through the whole assistant, storing each question as bots do."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            assistant = Assistant(retriever, store, rate_limit_per_minute=10**6)
            return await concurrent_throughput(assistant, questions)
        finally:
            await store.close()


def index_builds(settings: Settings, retriever: Retriever) -> tuple[float, float]:
    """Seconds for a full build from an empty cache, and to re-embed one edited passage and swap."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = Path(tmp) / "corpus"
        shutil.copytree(settings.corpus_dir, corpus_dir)
        store = IndexStore(Path(tmp) / "data", settings.index_type)
        start = time.perf_counter()
        store.build(load_corpus(corpus_dir), retriever.embedder)
        full = time.perf_counter() - start
        area_file = next(p for p in sorted(corpus_dir.glob("*.md")) if p.name != "README.md")
        text = area_file.read_text()
        cut = text.index("\n\n", text.index("kind:")) + 2
        area_file.write_text(text[:cut] + "An edited sentence. " + text[cut:])
        start = time.perf_counter()
        corpus = load_corpus(corpus_dir)
        retriever.swap(corpus, store.build(corpus, retriever.embedder))
        incremental = time.perf_counter() - start
    return full, incremental


def run_benchmark(settings: Settings, questions: int = 200, progress: Progress = print) -> str:
    retriever = configured_retriever(settings, progress)
    texts = bench_questions()
    progress("Timing a cold start...")
    cold, cold_rss = cold_start(settings)
    progress(f"Timing {questions} warm questions...")
    timings = warm_latency(retriever, texts, questions)
    progress(f"Timing {CONCURRENCY} concurrent users...")
    throughput = asyncio.run(throughput_with_store(retriever, texts))
    progress("Timing index builds...")
    full, incremental = index_builds(settings, retriever)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    quantiles = statistics.quantiles(timings, n=20)
    return "\n".join(
        [
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            f"corpus: {len(retriever.corpus.passages)} passages",
            f"cold start to first answer: {cold:.2f} s (peak RSS {cold_rss:.0f} MB)",
            f"warm latency per question: p50 {statistics.median(timings):.1f} ms, p95 {quantiles[18]:.1f} ms",
            f"throughput, {CONCURRENCY} concurrent questions: {throughput:.0f} questions/s",
            f"full index build (empty cache): {full:.1f} s",
            f"re-embed one changed passage and swap: {incremental:.2f} s",
            f"peak RSS of this process (includes the builds): {peak:.0f} MB",
        ]
    )
