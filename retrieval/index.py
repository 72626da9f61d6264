"""The persisted search index: dense vectors in FAISS, BM25 for words, and a manifest.

An index lives in its own build folder under `<data_dir>/index/builds/`, and the `current`
link names the one in use. A build is written completely before the link is switched with an
atomic rename, so a crash mid-build can never leave a half-written index to be loaded.
Vectors are cached by passage content hash, so a rebuild only embeds passages that changed.
A build may carry a copy of the corpus it came from (`corpus/`), so that rolling back to it, or
starting on it while the corpus on disk is broken, serves what it answered before.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bm25s
import faiss
import numpy as np
from tqdm import tqdm

from retrieval.corpus import Corpus, Passage, sha256_text
from retrieval.glossary import Glossary

FORMAT_VERSION = 5  # 2: scope examples' vectors; 3: the multilingual ones too; 4: questions
# asked; 5: the multilingual model's questions asked on its query side
KEEP_BUILDS = 6  # builds kept on disk besides the current one: the versions moderators can restore
SNAPSHOT = "corpus"  # the corpus copy inside a build folder
# from here exact search costs more per question than embedding it (1.4 ms at 10,000 passages,
# 7-40 ms at 20,000-100,000 on two cores), while HNSW stays under 0.5 ms
HNSW_FROM = 10_000
log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG
Progress = Callable[[str], None]

_STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves can cant dont im ive u ur pls plz hi hello thanks
    """.split()
)
_WORD = re.compile(r"\w\w+|\d")
SHORT_QUESTION_TERMS = 4  # up to this many search terms, glossary meanings are always added


class IndexCorruptError(Exception):
    """Index files exist but cannot be read; the caller rebuilds."""


@dataclass(frozen=True)
class Manifest:
    """What an index was built from; a mismatch with the current corpus or model means rebuild."""

    format_version: int
    model: str
    corpus_hash: str
    corpus_version: str
    index_type: str
    passage_ids: list[str]
    built_at: str
    dimension: int


def _stemmer() -> Callable[[list[str]], list[str]]:
    try:
        import Stemmer

        return Stemmer.Stemmer("english").stemWords
    except ImportError:  # stemming improves recall a little; plain words still work
        return lambda words: words


_stem = _stemmer()


_LETTER_WORDS = re.compile(r"[^\W\d_]{2,}")
MIN_WORDS_TO_TELL = 3  # fewer words say too little about which language a text is in


def letter_words(text: str) -> list[str]:
    """A text's words of two letters or more, lower-case: what the language tests count."""
    return _LETTER_WORDS.findall(text.lower())


def known_word_share(
    text: str, vocabulary: dict[str, int], min_words: int = MIN_WORDS_TO_TELL
) -> float:
    """Share of a text's words that are English stop words or corpus terms (1.0 if fewer than
    `min_words` words)."""
    if not text.isascii() and _mostly_other_script(text):
        return 0.0  # mostly another script (Cyrillic, Greek, CJK...)
    words = letter_words(text)
    if len(words) < max(min_words, 1):
        return 1.0
    known = sum(
        w in _STOPWORDS or stem in vocabulary for w, stem in zip(words, _stem(words), strict=True)
    )
    return known / len(words)


def _mostly_other_script(text: str) -> bool:
    """Whether fewer than half of a text's letters are ASCII (checked only for non-ASCII text:
    English questions, the busiest path, skip the loop over characters)."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) < len(letters) / 2


def tokenize(text: str) -> list[str]:
    """Lower-case, drop stop words and stem, the same way for passages and questions."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
    return _stem(words)


def search_text(glossary: Glossary, vocabulary: dict[str, int], question: str) -> str:
    """The question with glossary meanings, unless its own words already carry the meaning.

    In a question of a few words the term is the question ("MTA", "what is an NDA"). In a
    longer one, a term the passages themselves use (TTO) is found as it is, and adding its
    meaning would outweigh the user's detail ("can our TTO value the tech alone"); only a term
    the passages never use (CA) is still explained.
    """
    entries = glossary.matches(question)
    if entries and len(tokenize(question)) > SHORT_QUESTION_TERMS:
        entries = [e for e in entries if not all(t in vocabulary for t in tokenize(e.term))]
    return glossary.expand(question, entries)


@dataclass
class SearchIndex:
    """The loaded index: passages in row order, their vectors, FAISS and BM25 over them."""

    passages: list[Passage]
    vectors: np.ndarray
    dense: faiss.Index
    lexical: bm25s.BM25
    manifest: Manifest
    sentence_vectors: np.ndarray
    sentence_offsets: list[int]
    title_vectors: np.ndarray | None = None  # only in a store made `with_titles`
    build: str = ""  # the build folder's name: which version this is
    scope_vectors: np.ndarray | None = None  # the corpus's scope examples, as they are searched
    # the questions each sentence answers (`Passage.asked`), in passage and sentence order,
    # as they are searched
    asked_vectors: np.ndarray | None = None

    def rows_in(self, area: str) -> np.ndarray:
        """The rows of an area's passages: a question asked within an area ranks only these."""
        return self._rows_by_area.get(area, np.zeros(0, dtype=np.int64))

    @functools.cached_property
    def country_rows(self) -> frozenset[int]:
        """The rows of passages that hold in one country only (`Passage.country`): few, so
        ranking looks at these instead of every candidate."""
        return frozenset(row for row, passage in enumerate(self.passages) if passage.country)

    @functools.cached_property
    def sentence_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Where each passage's sentence vectors start and end, as arrays: scoring a few
        candidates' sentences then costs no Python loop over the whole corpus."""
        starts = np.asarray(self.sentence_offsets, dtype=np.int64)
        ends = np.append(starts[1:], len(self.sentence_vectors)).astype(np.int64)
        return starts, ends

    def asked_similarities(self, row: int, vector: np.ndarray, own: np.ndarray) -> np.ndarray:
        """Per sentence of the passage in `row`, the best cosine of the question to the
        questions that sentence answers; `own` (the sentences' cosines to the question) for a
        sentence without any, so that mixing the two leaves it as it was."""
        if self.asked_vectors is None or not len(self.asked_vectors):
            return own
        start, end = self._asked_bounds[row], self._asked_bounds[row + 1]
        if start == end:
            return own
        sentences, firsts = self._asked_groups[row]
        best = own.copy()
        best[sentences] = np.maximum.reduceat(self.asked_vectors[start:end] @ vector, firsts)
        return best

    @functools.cached_property
    def _asked_groups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per passage, its sentences that have questions asked and where each one's questions
        start among the passage's: one reduction per answer instead of a loop."""
        groups = []
        for passage in self.passages:
            counts = np.array([len(q) for q in passage.asked], dtype=np.int64)
            sentences = np.flatnonzero(counts)
            groups.append((sentences, (np.cumsum(counts) - counts)[sentences]))
        return groups

    def with_asked(
        self, rows: np.ndarray, similarity: np.ndarray, vector: np.ndarray, weight: float
    ) -> np.ndarray:
        """The rows' similarities to the question, each mixed with `weight` of the best
        similarity to the questions the passage's sentences answer, where it has any."""
        asked = self.asked_best(rows, vector)
        mixed = (1 - weight) * similarity + weight * asked
        return np.where(np.isnan(asked), similarity, mixed).astype(np.float32)

    def asked_best(self, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """Per row, the best cosine of the question to the questions its passage's sentences
        answer (NaN for a passage without any)."""
        if self.asked_vectors is None:
            return np.full(len(rows), np.nan, dtype=np.float32)
        bounds = self._asked_bounds
        return best_of_segments(self.asked_vectors, bounds[rows], bounds[rows + 1], vector)

    @functools.cached_property
    def _asked_bounds(self) -> np.ndarray:
        """Where each passage's questions asked start in `asked_vectors` (one more at the end)."""
        counts = [sum(len(q) for q in p.asked) for p in self.passages]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @functools.cached_property
    def _rows_by_area(self) -> dict[str, np.ndarray]:
        """Computed once per index, not once per question (100,000 passages take 10 ms)."""
        rows: dict[str, list[int]] = {}
        for row, passage in enumerate(self.passages):
            rows.setdefault(passage.area, []).append(row)
        return {area: np.array(found, dtype=np.int64) for area, found in rows.items()}


def best_of_segments(
    vectors: np.ndarray, starts: np.ndarray, ends: np.ndarray, vector: np.ndarray
) -> np.ndarray:
    """Per segment `vectors[start:end]`, the best cosine to `vector` (NaN for an empty one):
    one product over the segments' rows, so that scoring a few passages' sentences or
    questions asked costs no Python loop over them."""
    best = np.full(len(starts), np.nan, dtype=np.float32)
    counts = ends - starts
    has = counts > 0
    if not has.any():
        return best
    starts, counts = starts[has], counts[has]
    firsts = np.cumsum(counts) - counts
    rows = np.repeat(starts - firsts, counts) + np.arange(counts.sum())
    best[has] = np.maximum.reduceat(vectors[rows] @ vector, firsts)
    return best


def _asked_count(passages: list[Passage]) -> int:
    return sum(len(q) for p in passages for q in p.asked)


def sentence_offsets(passages: list[Passage]) -> list[int]:
    """Row where each passage's sentences start in the sentence-vector matrix."""
    offsets, start = [], 0
    for passage in passages:
        offsets.append(start)
        start += len(passage.sentences)
    return offsets


def search_on_one_core() -> None:
    """Make this thread's FAISS searches single-threaded (OpenMP's setting is per thread).

    One question's search over a few hundred rows took twice as long on two OpenMP threads as
    on one (56 against 31 us), and woke the other core, which the model's calls need.
    """
    faiss.omp_set_num_threads(1)


def dense_index_type(configured: str, passages: int) -> str:
    """The FAISS index for a corpus: "auto" is exact search below `HNSW_FROM` passages, HNSW
    from there on; "flat" and "hnsw" are kept as they are."""
    if configured != "auto":
        return configured
    return "hnsw" if passages >= HNSW_FROM else "flat"


def make_dense_index(vectors: np.ndarray, index_type: str) -> faiss.Index:
    """Exact inner product for small corpora; HNSW for large ones where exact search is slow."""
    dimension = vectors.shape[1]
    index: faiss.Index
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
    elif index_type == "flat":
        index = faiss.IndexFlatIP(dimension)
    else:
        raise ValueError(f"unknown index type '{index_type}' (use 'flat' or 'hnsw')")
    if len(vectors):
        index.add(vectors)
    return index


def make_lexical_index(passages: list[Passage]) -> bm25s.BM25:
    lexical = bm25s.BM25()
    lexical.index([tokenize(p.search_text) or ["_"] for p in passages], show_progress=False)
    return lexical


class IndexStore:
    """Reads and writes index builds in a data folder, with an embedding cache beside them.

    `kind` names a second index of the same passages kept beside the first (its own builds,
    link and cache under `index/<kind>/`), such as the multilingual model's; `with_titles`
    also embeds each passage's title, which that model ranks with. Both embed the questions
    each sentence answers (`Passage.asked`): highlights and the multilingual ranking read them.
    """

    def __init__(
        self,
        data_dir: Path,
        index_type: str = "flat",
        kind: str = "",
        with_titles: bool = False,
    ):
        self.root = Path(data_dir) / "index" / kind if kind else Path(data_dir) / "index"
        self.with_titles = with_titles
        self.builds = self.root / "builds"
        self.current = self.root / "current"
        self.index_type = index_type

    def _cache_path(self, model: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)[-80:]
        return self.root / f"embedding-cache-{safe}.npz"

    def load(self, corpus: Corpus, model: str) -> SearchIndex | None:
        """The current index if it matches this corpus and model; None if it is stale or absent."""
        if not self.current.exists():
            return None
        folder = self.current.resolve()
        try:
            manifest = Manifest(**json.loads((folder / "manifest.json").read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise IndexCorruptError(f"unreadable manifest in {folder}: {exc}") from exc
        if (
            manifest.format_version != FORMAT_VERSION
            or manifest.model != model
            or manifest.corpus_hash != corpus.hash
            or manifest.index_type != dense_index_type(self.index_type, len(corpus.passages))
        ):
            return None
        return self._read_build(folder, manifest, corpus)

    def load_or_build(
        self,
        corpus: Corpus,
        embedder,
        progress: Progress = lambda _msg: None,
        snapshot_of: Path | None = None,
    ) -> SearchIndex:
        """The current index if it matches; otherwise (stale, missing, corrupt) a new build.

        A current build made before builds kept their corpus gets its copy now, so that it too
        can be returned to.
        """
        try:
            index = self.load(corpus, embedder.name)
        except IndexCorruptError as exc:
            log.warning("%s; rebuilding the index", exc)
            progress(f"Warning: the saved index was damaged ({self.root.name}); rebuilding it.")
            index = None
        if index is None:
            progress(f"Building the search index ({self.root.name})...")
            return self.build(corpus, embedder, progress, snapshot_of)
        if snapshot_of is not None and not self.snapshot(index.build).exists():
            self._add_snapshot(index.build, snapshot_of, corpus.hash)
        return index

    def _add_snapshot(self, build: str, corpus_dir: Path, corpus_hash: str) -> None:
        from retrieval.corpus import load_corpus  # the loader only, when a snapshot is checked

        staging = self.builds / build / f".{SNAPSHOT}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(corpus_dir, staging, ignore=_not_corpus)
        try:
            same = load_corpus(staging).hash == corpus_hash
        except Exception:  # a corpus that changed under us is simply not kept
            same = False
        if same:
            os.replace(staging, self.snapshot(build))
        else:
            shutil.rmtree(staging, ignore_errors=True)

    def current_build(self) -> str | None:
        """The name of the build in use, if any."""
        return self.current.resolve().name if self.current.exists() else None

    def snapshot(self, build: str) -> Path:
        """Where a build keeps the corpus it came from (absent for builds made without one)."""
        return self.builds / build / SNAPSHOT

    def open(self, build: str, corpus: Corpus, model: str) -> SearchIndex:
        """A kept build by name, checked against the corpus and model it must serve."""
        folder = self.builds / build
        try:
            manifest = Manifest(**json.loads((folder / "manifest.json").read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise IndexCorruptError(f"build {build} is missing or unreadable: {exc}") from exc
        if manifest.corpus_hash != corpus.hash or manifest.model != model:
            raise IndexCorruptError(f"build {build} was made from another corpus or model")
        return self._read_build(folder, manifest, corpus)

    def activate(self, build: str) -> None:
        """Make a kept build the current one (a promotion or a rollback)."""
        folder = self.builds / build
        if not (folder / "manifest.json").exists():
            raise IndexCorruptError(f"build {build} is no longer on disk")
        self._point_current_at(folder)

    def _read_build(self, folder: Path, manifest: Manifest, corpus: Corpus) -> SearchIndex:
        try:
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
            sentence_vectors = np.load(folder / "sentences.npy", allow_pickle=False)
            dense = faiss.read_index(str(folder / "dense.faiss"))
            lexical = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
            passages = [corpus.by_id[pid] for pid in manifest.passage_ids]
        except Exception as exc:  # any broken file means the same thing: rebuild
            raise IndexCorruptError(f"unreadable index files in {folder}: {exc}") from exc
        rows = len(passages)
        sentences = sum(len(p.sentences) for p in passages)
        if (
            vectors.shape != (rows, manifest.dimension)
            or dense.ntotal != rows
            or sentence_vectors.shape != (sentences, manifest.dimension)
        ):
            raise IndexCorruptError(f"index files in {folder} disagree with their manifest")
        offsets = sentence_offsets(passages)
        width = manifest.dimension
        titles = self._read_optional(folder, "titles", self.with_titles, (rows, width))
        examples = len(corpus.scope.examples()[0])
        scope = self._read_optional(folder, "scope", True, (examples, width))
        asked = self._read_optional(folder, "asked", True, (_asked_count(passages), width))
        return SearchIndex(
            passages,
            vectors,
            dense,
            lexical,
            manifest,
            sentence_vectors,
            offsets,
            titles,
            build=folder.name,
            scope_vectors=scope,
            asked_vectors=asked,
        )

    def _read_optional(
        self, folder: Path, name: str, wanted: bool, shape: tuple[int, int]
    ) -> np.ndarray | None:
        """The vectors of `name`.npy (titles, scope examples, questions asked) where this store
        keeps them."""
        if not wanted:
            return None
        try:
            vectors = np.load(folder / f"{name}.npy", allow_pickle=False)
        except Exception as exc:  # as for the other files: rebuild
            raise IndexCorruptError(f"unreadable {name} vectors in {folder}: {exc}") from exc
        if vectors.shape != shape:
            raise IndexCorruptError(f"{name} vectors in {folder} disagree with the corpus")
        return vectors

    def build(
        self,
        corpus: Corpus,
        embedder,
        progress: Progress = lambda _msg: None,
        snapshot_of: Path | None = None,
        activate: bool = True,
    ) -> SearchIndex:
        """Embed what changed, write a complete build, then switch `current` to it atomically.

        `snapshot_of` is the corpus folder to keep a copy of inside the build; with
        `activate=False` the build is a candidate, written beside the current one and not used.
        """
        passages = list(corpus.passages)
        lexical = make_lexical_index(passages)
        index_type = dense_index_type(self.index_type, len(passages))
        groups = [[p.search_text for p in passages], [s for p in passages for s in p.sentences]]
        if self.with_titles:
            groups.append([p.title for p in passages])
        # the scope examples as they are searched: the English scope model reads the main
        # model's vectors, the multilingual path's abstention the second model's
        examples = corpus.scope.examples()[0]
        groups.append([search_text(corpus.glossary, lexical.vocab_dict, q) for q in examples])
        # the questions each sentence answers, embedded as a user's question is: on the side of
        # a model that has one for questions (e5's query side), like the questions they meet
        asked = [q for p in passages for questions in p.asked for q in questions]
        asked_texts = [search_text(corpus.glossary, lexical.vocab_dict, q) for q in asked]
        work = [(embedder, group) for group in groups]
        work.append((getattr(embedder, "questions", embedder), asked_texts))
        vectors, sentence_vectors, *extra, asked_vectors = self._embed_cached(work, progress)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            model=embedder.name,
            corpus_hash=corpus.hash,
            corpus_version=corpus.version,
            index_type=index_type,
            passage_ids=[p.id for p in passages],
            built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            dimension=embedder.dimension,
        )
        index = SearchIndex(
            passages,
            vectors,
            make_dense_index(vectors, index_type),
            lexical,
            manifest,
            sentence_vectors,
            sentence_offsets(passages),
            title_vectors=extra[0] if self.with_titles else None,
            scope_vectors=extra[-1],
            asked_vectors=asked_vectors,
        )
        index.build = self._write(index, snapshot_of)
        if activate:
            self._point_current_at(self.builds / index.build)
        progress(f"Index built: {len(passages)} passages.")
        return index

    def _embed_cached(
        self, work: list[tuple[Any, list[str]]], progress: Progress
    ) -> list[np.ndarray]:
        """Vectors for each (embedder, texts) group, embedding only texts that embedder's cache
        has not seen; each embedder keeps its own cache, of the texts it embedded this time."""
        by_name: dict[str, tuple[Any, dict[str, str]]] = {}
        for embedder, group in work:
            wanted = by_name.setdefault(embedder.name, (embedder, {}))[1]
            wanted.update((sha256_text(t), t) for t in group)
        caches = {}
        for name, (embedder, wanted) in by_name.items():
            cache = self._read_cache(name)
            missing = [h for h in wanted if h not in cache]
            if missing:
                progress(f"Embedding {len(missing)} new or changed texts (of {len(wanted)})...")
                cache.update(_embed_with_progress(embedder, missing, wanted, progress))
                self._write_cache(name, cache, keep=set(wanted))
            caches[name] = cache
        return [
            np.stack([caches[e.name][sha256_text(t)] for t in group]).astype(np.float32)
            if group
            else np.zeros((0, e.dimension), dtype=np.float32)
            for e, group in work
        ]

    def _read_cache(self, model: str) -> dict[str, np.ndarray]:
        path = self._cache_path(model)
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                return dict(zip(data["hashes"].tolist(), data["vectors"], strict=True))
        except Exception as exc:  # a broken cache only costs a re-embed
            log.warning("embedding cache %s is unreadable (%s); re-embedding", path, exc)
            return {}

    def _write_cache(self, model: str, cache: dict[str, np.ndarray], keep: set[str]) -> None:
        kept = {h: v for h, v in cache.items() if h in keep}
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, suffix=".npz", delete=False) as tmp:
            try:
                hashes = np.array(list(kept), dtype=str)
                np.savez(tmp, hashes=hashes, vectors=np.stack(list(kept.values())))
            except BaseException:  # a full disk: leave no partial file to fill it further
                Path(tmp.name).unlink(missing_ok=True)
                raise
        os.replace(tmp.name, self._cache_path(model))

    def _write(self, index: SearchIndex, snapshot_of: Path | None) -> str:
        """Write a complete build folder and return its name; nothing points at it yet."""
        self.builds.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-")
        folder = Path(tempfile.mkdtemp(dir=self.builds, prefix=f"build-{stamp}"))
        if snapshot_of is not None:
            shutil.copytree(snapshot_of, folder / SNAPSHOT, ignore=_not_corpus)
        np.save(folder / "vectors.npy", index.vectors, allow_pickle=False)
        np.save(folder / "sentences.npy", index.sentence_vectors, allow_pickle=False)
        if index.title_vectors is not None:
            np.save(folder / "titles.npy", index.title_vectors, allow_pickle=False)
        if index.scope_vectors is not None:
            np.save(folder / "scope.npy", index.scope_vectors, allow_pickle=False)
        if index.asked_vectors is not None:
            np.save(folder / "asked.npy", index.asked_vectors, allow_pickle=False)
        faiss.write_index(index.dense, str(folder / "dense.faiss"))
        index.lexical.save(str(folder / "bm25"), show_progress=False)
        # the manifest is written last: a build without one is incomplete by definition
        (folder / "manifest.json").write_text(json.dumps(asdict(index.manifest), indent=1))
        self.remove_old_builds(keep=folder)
        return folder.name

    def _point_current_at(self, folder: Path) -> None:
        link = self.root / f"current.{os.getpid()}.tmp"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(folder.relative_to(self.root))
        os.replace(link, self.current)

    def remove_old_builds(self, keep: Path) -> None:
        """Keep the newest builds (the versions one can return to), `keep` and the current one:
        after each build here, and after a build made by another replica is unpacked."""
        current = self.current.resolve() if self.current.exists() else None
        builds = sorted(
            (p for p in self.builds.iterdir() if p.is_dir() and p not in (keep, current)),
            key=lambda p: p.stat().st_mtime,
        )
        for old in builds[: max(0, len(builds) - KEEP_BUILDS)]:
            shutil.rmtree(old, ignore_errors=True)

    def built_at(self) -> str | None:
        """When the current index was built (ISO time), for /about."""
        manifest = self.current_manifest()
        return manifest.built_at if manifest else None

    def current_manifest(self) -> Manifest | None:
        """What the index on disk was built from, without loading it; None if absent or broken."""
        try:
            return Manifest(**json.loads((self.current.resolve() / "manifest.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _not_corpus(folder: str, names: list[str]) -> set[str]:
    """What a corpus snapshot leaves out: drafts, hidden files and editor leftovers."""
    return {n for n in names if n.startswith(".") or n.endswith("~") or n == "drafts"}


PROGRESS_CHUNK = 256  # texts per embedding call while a progress bar is shown


def _embed_with_progress(
    embedder, hashes: list[str], texts: dict[str, str], progress: Progress = lambda _msg: None
) -> dict[str, np.ndarray]:
    """Embed in chunks under a progress bar: a first build takes minutes. Off a terminal (a
    service's log) the bar is not drawn, and a line says how far it got at every tenth."""
    fresh: dict[str, np.ndarray] = {}
    told = 0
    with tqdm(total=len(hashes), desc="Embedding", unit="text", disable=None) as bar:
        for start in range(0, len(hashes), PROGRESS_CHUNK):
            chunk = hashes[start : start + PROGRESS_CHUNK]
            fresh.update(zip(chunk, embedder.embed([texts[h] for h in chunk]), strict=True))
            bar.update(len(chunk))
            tenth = 10 * len(fresh) // len(hashes)
            if bar.disable and tenth > told:
                told = tenth
                progress(f"Embedding: {len(fresh)} of {len(hashes)} texts ({10 * tenth}%)")
    return fresh
