"""A synthetic corpus of any size, made from the real one: what ranking costs at 100,000 passages.

Each synthetic passage recombines real sentences of one area, so BM25 sees real words in
realistic proportions. Its sentence vectors are those sentences' real embeddings, and its
passage vector is their normalised mean: embedding 100,000 passages and their sentences would
take hours, while these vectors cluster the way real ones do, which is what FAISS's cost
depends on (random vectors would not). The same size and seed always give the same corpus.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import statistics
import time

import numpy as np

from bot.assistant import configured_retriever
from bot.benchmark import bench_questions, translated_questions, warm_latency
from bot.settings import Settings
from retrieval.corpus import Corpus, Passage
from retrieval.index import (
    FORMAT_VERSION,
    Manifest,
    Progress,
    SearchIndex,
    dense_index_type,
    make_dense_index,
    make_lexical_index,
    sentence_offsets,
)
from retrieval.search import Retriever

SEED = 13
SENTENCES = (2, 5)  # a synthetic passage has between 2 and 4 sentences
TURN = 25  # questions timed on one corpus before the other takes its turn


def synthetic_index(real: SearchIndex, size: int, index_type: str) -> SearchIndex:
    """An index of `size` passages recombined from `real` (see the module docstring)."""
    rng = np.random.default_rng(SEED)
    by_area: dict[str, list[int]] = {}
    for row, passage in enumerate(real.passages):
        by_area.setdefault(passage.area, []).append(row)
    areas = sorted(by_area)
    passages: list[Passage] = []
    vectors, sentence_rows, base_rows = [], [], []
    while len(passages) < size:
        rows = by_area[areas[len(passages) % len(areas)]]
        picked = [_random_sentence(real, rows, rng) for _ in range(rng.integers(*SENTENCES))]
        sentences = tuple(real.passages[row].sentences[i] for row, i in picked)
        base_row = rows[int(rng.integers(len(rows)))]
        base = real.passages[base_row]
        passage = dataclasses.replace(base, id=f"SYN-{len(passages)}", text=" ".join(sentences))
        if passage.sentences != sentences:  # joined, they would split differently: skip
            continue
        passages.append(passage)
        base_rows.append(base_row)
        sentence_rows.append([real.sentence_offsets[row] + i for row, i in picked])
        mean = real.sentence_vectors[sentence_rows[-1]].mean(axis=0)
        vectors.append(mean / np.linalg.norm(mean))
    matrix = np.stack(vectors).astype(np.float32)
    sentence_vectors = real.sentence_vectors[[r for rows in sentence_rows for r in rows]]
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model=real.manifest.model,
        corpus_hash=f"synthetic-{size}-{SEED}",
        corpus_version="synthetic",
        index_type=index_type,
        passage_ids=[p.id for p in passages],
        built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        dimension=real.manifest.dimension,
    )
    return SearchIndex(
        passages,
        matrix,
        make_dense_index(matrix, index_type),
        make_lexical_index(passages),
        manifest,
        sentence_vectors,
        sentence_offsets(passages),
        # a synthetic passage keeps the title of the real one it was based on
        title_vectors=real.title_vectors[base_rows] if real.title_vectors is not None else None,
    )


def synthetic_corpus(corpus: Corpus, index: SearchIndex) -> Corpus:
    """The real corpus's areas and glossary around the synthetic passages."""
    passages = tuple(index.passages)
    return dataclasses.replace(
        corpus,
        passages=passages,
        version="synthetic",
        hash=index.manifest.corpus_hash,
        by_id={p.id: p for p in passages},
    )


def _random_sentence(
    real: SearchIndex, rows: list[int], rng: np.random.Generator
) -> tuple[int, int]:
    """A real sentence, as the row of its passage and its number in that passage."""
    row = rows[int(rng.integers(len(rows)))]
    return row, int(rng.integers(len(real.passages[row].sentences)))


def run_scale_benchmark(
    settings: Settings, passages: int, questions: int = 200, progress: Progress = print
) -> str:
    """Latency per question on the real corpus and on a synthetic one of `passages` passages.

    English questions answer through the English path (MiniLM and BM25), questions in other
    languages through the multilingual one (when it is on), so the only difference between
    the corpora is the number of passages ranked.
    """
    served = configured_retriever(settings, progress)
    real = Retriever(served.corpus, served.index, served.embedder, served.policy)
    index_type = dense_index_type(settings.index_type, passages)
    progress(f"Making {passages:,} synthetic passages and indexing them ({index_type})...")
    start = time.perf_counter()
    index = synthetic_index(real.index, passages, index_type)
    build = time.perf_counter() - start
    large = Retriever(synthetic_corpus(real.corpus, index), index, real.embedder, real.policy)
    flat = dataclasses.replace(index, dense=make_dense_index(index.vectors, "flat"))
    exact = Retriever(large.corpus, flat, real.embedder, real.policy)
    progress(f"Timing {questions} warm questions on each...")
    small_ms, large_ms, exact_ms = latency_in_turn([real, large, exact], questions)
    small_p50, large_p50 = statistics.median(small_ms), statistics.median(large_ms)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        f"real corpus: {len(real.corpus.passages)} passages "
        f"({real.index.manifest.index_type} index)",
        f"synthetic corpus: {passages:,} passages ({index_type} index), "
        f"made and indexed in {build:.1f} s",
        f"warm latency, real corpus: p50 {small_p50:.1f} ms, p95 {_p95(small_ms):.1f} ms",
        f"warm latency, synthetic corpus: p50 {large_p50:.1f} ms, p95 {_p95(large_ms):.1f} ms",
        f"p50 ratio, synthetic / real: {large_p50 / small_p50:.2f}x",
        f"synthetic corpus with exact (flat) search instead: p50 "
        f"{statistics.median(exact_ms):.1f} ms, p95 {_p95(exact_ms):.1f} ms",
    ]
    if served.multilingual is not None and served.state.translated is not None:
        lines += _other_languages_at_scale(served, large, index_type, questions)
    return "\n".join(lines)


def _other_languages_at_scale(
    served: Retriever, english: Retriever, index_type: str, questions: int
) -> list[str]:
    """The multilingual path's latency on the real corpus and on `english`'s synthetic
    passages (the same passages in the same rows, with the multilingual model's vectors)."""
    multilingual, translated = served.multilingual, served.state.translated
    assert multilingual is not None and translated is not None
    index = synthetic_index(translated, len(english.index.passages), index_type)
    real = Retriever(served.corpus, served.index, served.embedder, served.policy, multilingual)
    large = Retriever(
        english.corpus,
        english.index,
        served.embedder,
        served.policy,
        dataclasses.replace(multilingual, index=index),
    )
    small_ms, large_ms = latency_in_turn([real, large], questions, translated_questions())
    small_p50, large_p50 = statistics.median(small_ms), statistics.median(large_ms)
    return [
        f"other languages, real corpus: p50 {small_p50:.1f} ms, p95 {_p95(small_ms):.1f} ms",
        f"other languages, synthetic corpus: p50 {large_p50:.1f} ms, p95 {_p95(large_ms):.1f} ms",
        f"other languages, p50 ratio, synthetic / real: {large_p50 / small_p50:.2f}x",
    ]


def latency_in_turn(
    retrievers: list[Retriever], count: int, texts: list[str] | None = None
) -> list[list[float]]:
    """Milliseconds per question on each retriever, taking turns in blocks of `TURN`
    questions: on a shared machine each one sees the same load, and within a block each
    runs as it would alone (the memory one ranks through stays warm)."""
    texts = texts or bench_questions()
    timings: list[list[float]] = [[] for _ in retrievers]
    for start in range(0, count, TURN):
        block = [texts[i % len(texts)] for i in range(start, min(count, start + TURN))]
        for retriever, times in zip(retrievers, timings, strict=True):
            times += warm_latency(retriever, block, len(block))
    return timings


def _p95(timings: list[float]) -> float:
    return statistics.quantiles(timings, n=20)[18]
