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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from bot.assistant import Assistant, User, configured_retriever
from bot.settings import Settings
from bot.store import Store
from retrieval.corpus import load_corpus
from retrieval.evaluate import DEFAULT_EVAL_FILE, TRANSLATED_EVAL_FILE, load_translated_sets
from retrieval.index import IndexStore, Progress
from retrieval.multilingual import ENGLISH, multilingual_store
from retrieval.search import Retriever

CONCURRENCY = 32
FLOOR_THREADS = 2
ROUNDS = 32  # rounds of 32 questions per run: 8 rounds (half a second) moved the ratio by 0.1


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


def translated_questions() -> list[str]:
    """Every question of the translated tuning set, languages interleaved."""
    sets = load_translated_sets(TRANSLATED_EVAL_FILE)
    by_language = [[q.question for q in data.questions] for data in sets.values()]
    return [q for group in zip(*by_language, strict=True) for q in group]


def english_path(retriever: Retriever, questions: list[str]) -> tuple[list[str], list[str]]:
    """The questions MiniLM answers (those read as English), and the text it embeds for each.

    The floor and the 32 users must time the same model on the same texts: a question read as
    another language goes to the multilingual model (several times MiniLM's cost per question),
    and the assistant embeds a question with the glossary meanings of its terms appended.
    """
    english = [q for q in questions if retriever.language_of(q) == ENGLISH]
    return english, [retriever.query_text(q, ENGLISH) for q in english]


def batch_floor(retriever: Retriever, texts: list[str], rounds: int = ROUNDS) -> float:
    """Texts per second of the bare model: batches of 32 on two threads, no ranking.

    The ceiling for `ipbot bench`'s concurrent throughput: what is left between the two is
    ranking, storing, the event loop and batching overhead.
    """
    batches = [
        [texts[(r * CONCURRENCY + i) % len(texts)] for i in range(CONCURRENCY)]
        for r in range(rounds)
    ]
    model = retriever.embedder.model_for_benchmark()
    model(batches[0])
    with ThreadPoolExecutor(FLOOR_THREADS) as pool:
        start = time.perf_counter()
        list(pool.map(model, batches))
        return rounds * CONCURRENCY / (time.perf_counter() - start)


def multilingual_build(settings: Settings, retriever: Retriever) -> float | None:
    """Seconds for a full multilingual index build from an empty cache (None when it is off)."""
    if retriever.multilingual is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        multilingual_store(Path(tmp)).build(retriever.corpus, retriever.multilingual.model.passages)
        return time.perf_counter() - start


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
    assistant: Assistant, questions: list[str], rounds: int = ROUNDS
) -> float:
    """Questions per second when 32 users keep asking: each asks its next question as soon as
    it has its answer (`rounds` each), so 32 are always in flight, as on a busy server. Users
    asking in lockstep, all waiting for the slowest before the next round, would time the
    pauses between rounds as well (about 0.05x lower)."""
    users = [User("bench", str(i)) for i in range(CONCURRENCY)]
    await assistant.ask(users[0], questions[0])

    async def user(i: int) -> None:
        for r in range(rounds):
            await assistant.ask(users[i], questions[(r * CONCURRENCY + i) % len(questions)])

    start = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(CONCURRENCY)))
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


def throughput_against_floor(
    retriever: Retriever, questions: list[str], texts: list[str], repeats: int = 3
) -> tuple[float, float, float]:
    """The concurrent throughput, the batch floor and their ratio (medians of `repeats` runs),
    over the questions of the English path and the texts embedded for them (`english_path`).

    The two are measured in turn, so that on a shared machine each pair sees the same load.
    """
    pairs = []
    for _ in range(repeats):
        floor = batch_floor(retriever, texts)
        pairs.append((asyncio.run(throughput_with_store(retriever, questions)), floor))
    return (
        statistics.median(t for t, _ in pairs),
        statistics.median(f for _, f in pairs),
        statistics.median(t / f for t, f in pairs),
    )


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
    progress(f"Timing {questions} warm questions in other languages...")
    translated = warm_latency(retriever, translated_questions(), questions)
    progress(f"Timing {CONCURRENCY} concurrent users and the bare model's batch floor...")
    english, embedded = english_path(retriever, texts)
    throughput, floor, ratio = throughput_against_floor(retriever, english, embedded)
    progress("Timing index builds...")
    full, incremental = index_builds(settings, retriever)
    multilingual = multilingual_build(settings, retriever)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    quantiles = statistics.quantiles(timings, n=20)
    translated_q = statistics.quantiles(translated, n=20)
    ml_build = f"{multilingual:.1f} s" if multilingual is not None else "off"
    return "\n".join(
        [
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            f"corpus: {len(retriever.corpus.passages)} passages",
            f"cold start to first answer: {cold:.2f} s (peak RSS {cold_rss:.0f} MB)",
            f"warm latency per question: p50 {statistics.median(timings):.1f} ms, p95 {quantiles[18]:.1f} ms",
            f"warm latency, other languages: p50 {statistics.median(translated):.1f} ms, "
            f"p95 {translated_q[18]:.1f} ms",
            f"throughput, {CONCURRENCY} concurrent questions: {throughput:.0f} questions/s "
            f"({ratio:.2f}x the bare model's batch floor, median of runs in turn; "
            f"the {len(english)} of {len(texts)} questions read as English)",
            f"bare model batch floor ({CONCURRENCY} per batch, {FLOOR_THREADS} threads, the "
            f"same questions as embedded): {floor:.0f} questions/s",
            f"full index build (empty cache): {full:.1f} s",
            f"full multilingual index build (empty cache): {ml_build}",
            f"re-embed one changed passage and swap: {incremental:.2f} s",
            f"peak RSS of this process (includes the builds): {peak:.0f} MB",
        ]
    )
