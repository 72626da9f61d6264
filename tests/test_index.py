"""The persisted index: reused when current, rebuilt when stale or damaged, never half-loaded."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.corpus import load_corpus
from retrieval.index import IndexCorruptError, IndexStore, dense_index_type
from retrieval.search import Retriever

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(CORPUS / "valuation.md", folder)
    shutil.copy(CORPUS / "VERSION", folder)
    return folder


@pytest.fixture(scope="module")
def warm_data(tmp_path_factory: pytest.TempPathFactory, retriever: Retriever) -> Path:
    """A data folder whose embedding cache already holds the valuation area."""
    folder = tmp_path_factory.mktemp("warm")
    corpus = folder / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "valuation.md", corpus)
    IndexStore(folder / "data").build(load_corpus(corpus), retriever.embedder)
    return folder / "data"


@pytest.fixture
def store(tmp_path: Path, warm_data: Path) -> IndexStore:
    shutil.copytree(warm_data, tmp_path / "data", symlinks=True)
    shutil.rmtree(tmp_path / "data" / "index" / "builds")
    (tmp_path / "data" / "index" / "current").unlink()
    return IndexStore(tmp_path / "data")


class CrashingEmbedder:
    """Fault injection: an embedder that fails mid-build, like a process killed while embedding."""

    def __init__(self, real):
        self.name, self.dimension = real.name, real.dimension

    def embed(self, texts):
        raise RuntimeError("killed while embedding")


def edit_first_passage(area_file: Path) -> None:
    """What a moderator does: add a sentence to one passage's text."""
    text = area_file.read_text()
    start = text.index("\n\n", text.index("kind:")) + 2
    area_file.write_text(text[:start] + "Moderators changed this sentence. " + text[start:])


def build(store: IndexStore, folder: Path, embedder) -> list[str]:
    messages: list[str] = []
    store.build(load_corpus(folder), embedder, messages.append)
    return messages


def test_current_index_is_loaded_without_rebuilding(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    build(store, small_corpus, retriever.embedder)
    loaded = store.load(load_corpus(small_corpus), retriever.embedder.name)
    assert loaded is not None
    assert len(loaded.passages) == loaded.dense.ntotal == len(load_corpus(small_corpus).passages)


def test_rebuild_embeds_only_the_changed_passage(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    build(store, small_corpus, retriever.embedder)
    edit_first_passage(small_corpus / "valuation.md")
    second = build(store, small_corpus, retriever.embedder)
    changed = [m for m in second if m.startswith("Embedding")]
    assert changed and int(changed[0].split()[1]) <= 3, second


def test_off_a_terminal_a_first_build_says_how_far_embedding_got(
    store: IndexStore, small_corpus: Path, retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a service manager the progress bar is not drawn: a first build was minutes of
    silence in the log."""
    for cache in store.root.glob("embedding-cache-*.npz"):
        cache.unlink()  # a first build: nothing embedded yet
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    monkeypatch.setattr("retrieval.index.PROGRESS_CHUNK", 8)
    lines = [m for m in build(store, small_corpus, retriever.embedder) if m.startswith("Embedding:")]
    assert len(lines) >= 3 and lines[-1].endswith("(100%)"), lines


def test_stale_index_is_not_loaded(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    build(store, small_corpus, retriever.embedder)
    (small_corpus / "valuation.md").write_text((small_corpus / "valuation.md").read_text() + "\n")
    area_file = small_corpus / "valuation.md"
    area_file.write_text(area_file.read_text().replace("kind: example", "kind: recommendation", 1))
    assert store.load(load_corpus(small_corpus), retriever.embedder.name) is None
    assert store.load(load_corpus(small_corpus), "another-model") is None


def test_damaged_index_is_rebuilt_with_a_warning(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    build(store, small_corpus, retriever.embedder)
    (store.current.resolve() / "dense.faiss").write_bytes(b"not a faiss index")
    corpus = load_corpus(small_corpus)
    with pytest.raises(IndexCorruptError):
        store.load(corpus, retriever.embedder.name)
    messages: list[str] = []
    index = store.load_or_build(corpus, retriever.embedder, messages.append)
    assert index.dense.ntotal == len(corpus.passages)
    assert any("damaged" in m for m in messages)
    assert store.load(corpus, retriever.embedder.name) is not None


def test_crash_during_build_keeps_the_previous_index(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    build(store, small_corpus, retriever.embedder)
    before = store.current.resolve()
    edit_first_passage(small_corpus / "valuation.md")
    with pytest.raises(RuntimeError):
        build(store, small_corpus, CrashingEmbedder(retriever.embedder))
    assert store.current.resolve() == before
    assert (before / "manifest.json").exists()


def test_build_folder_without_manifest_is_never_current(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    build(store, small_corpus, retriever.embedder)
    half = store.builds / "build-half-written"
    half.mkdir()
    (half / "vectors.npy").write_bytes(b"partial")
    assert store.current.resolve() != half
    assert store.load(load_corpus(small_corpus), retriever.embedder.name) is not None


def test_a_version_packed_on_one_machine_opens_on_another(
    retriever: Retriever, tmp_path: Path
) -> None:
    """What a replica without the build files does with the archive from the database."""
    from retrieval.versions import Versions

    here = retriever.versions
    assert here is not None and here.multilingual is not None
    build = here.open(retriever.index.build, retriever.state.translated.build)  # type: ignore[union-attr]
    archive = here.pack(build)
    there = Versions(tmp_path, "flat", here.embedder, here.multilingual)
    there.unpack(archive)
    there.unpack(archive)  # a second copy of the same archive changes nothing
    opened = there.open(build.name, build.translated_name)
    assert opened.corpus.hash == build.corpus.hash
    assert [p.id for p in opened.index.passages] == [p.id for p in build.index.passages]
    assert opened.translated is not None and opened.translated.build == build.translated_name
    assert not list(tmp_path.glob("index/tmp*")), "no staging folder is left behind"


def test_a_replica_that_unpacks_versions_keeps_as_few_builds_as_one_that_builds(
    retriever: Retriever, tmp_path: Path
) -> None:
    """Builds made here are pruned to KEEP_BUILDS; unpacked ones piled up, some 12 MB each."""
    import os

    from retrieval.index import KEEP_BUILDS
    from retrieval.versions import Versions

    here = retriever.versions
    assert here is not None
    build = here.open(retriever.index.build, retriever.state.translated.build)  # type: ignore[union-attr]
    archive = here.pack(build)
    there = Versions(tmp_path, "flat", here.embedder, here.multilingual)
    there.english.builds.mkdir(parents=True)
    for n in range(KEEP_BUILDS + 3):  # older builds, as earlier versions left them
        old = there.english.builds / f"build-old-{n}"
        old.mkdir()
        os.utime(old, (n, n))
    there.unpack(archive)

    kept = [p.name for p in there.english.builds.iterdir()]
    assert build.name in kept and len(kept) == KEEP_BUILDS + 1


def test_auto_index_type_is_exact_for_small_corpora_and_hnsw_for_large_ones() -> None:
    assert dense_index_type("auto", 233) == "flat"
    assert dense_index_type("auto", 100_000) == "hnsw"
    assert dense_index_type("flat", 100_000) == "flat", "a chosen index type was overridden"


def test_an_index_built_before_auto_existed_is_loaded_without_rebuilding(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    build(store, small_corpus, retriever.embedder)  # the old default: "flat"
    auto = IndexStore(store.root.parent, "auto")

    loaded = auto.load(load_corpus(small_corpus), retriever.embedder.name)

    assert loaded is not None, "upgrading to index type auto rebuilt a small corpus's index"
    assert loaded.manifest.index_type == "flat"


def test_questions_asked_are_embedded_kept_and_read_per_sentence(
    store: IndexStore, small_corpus: Path, retriever: Retriever
) -> None:
    passage = load_corpus(small_corpus).passages[0]
    opening = " ".join(passage.sentences[1].split()[:8])
    question = "is there a quick way to see what our invention is worth?"
    (small_corpus / "highlights.yaml").write_text(
        f'{passage.id}:\n  "{opening}":\n  - {question}\n'
    )
    build(store, small_corpus, retriever.embedder)

    loaded = store.load(load_corpus(small_corpus), retriever.embedder.name)
    assert loaded is not None and loaded.asked_vectors is not None
    assert loaded.asked_vectors.shape == (1, retriever.embedder.dimension)
    vector = retriever.embedder.embed([question])[0]
    own = np.linspace(0.1, 0.5, len(passage.sentences)).astype(np.float32)
    asked = loaded.asked_similarities(0, vector, own)
    assert asked[1] == pytest.approx(1.0, abs=1e-3)
    assert (np.delete(asked, 1) == np.delete(own, 1)).all()  # sentences without questions
    other = np.zeros(len(loaded.passages[1].sentences), dtype=np.float32)
    assert loaded.asked_similarities(1, vector, other) is other  # a passage without any
    best = loaded.asked_best(np.array([1, 0, 2]), vector)  # per passage, for ranking
    assert best[1] == pytest.approx(1.0, abs=1e-3) and np.isnan(best[[0, 2]]).all()


def test_a_full_disk_leaves_no_partial_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failed attempt would otherwise leave a file on the disk that is already full."""
    store = IndexStore(tmp_path / "data")

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", no_space)
    with pytest.raises(OSError):
        store._write_cache("model", {"h": np.zeros(3, dtype=np.float32)}, {"h"})
    assert list(store.root.glob("*.npz")) == []
