"""Corpus versions: a copy of the corpus with its English and multilingual indexes.

A refresh builds a candidate version beside the live one (nothing points at it yet), so the
live version keeps answering while it is built and checked; promoting it or rolling back is
pointing the `current` links at a kept build. Each build carries the corpus it came from, so a
rollback, or a start while the corpus on disk is broken, serves what was answered before.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from retrieval.corpus import Corpus, CorpusError, Problem, check_corpus, load_corpus
from retrieval.index import IndexCorruptError, IndexStore, Progress, SearchIndex
from retrieval.multilingual import MultilingualModel, multilingual_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Build:
    """One version, ready to serve or to evaluate."""

    corpus: Corpus
    index: SearchIndex
    translated: SearchIndex | None = None  # the multilingual index, when that path is on

    @property
    def name(self) -> str:
        return self.index.build

    @property
    def translated_name(self) -> str | None:
        return self.translated.build if self.translated is not None else None


class VersionUnavailableError(Exception):
    """A version's files are gone or damaged: it cannot be served again."""


class Versions:
    """Builds, opens and activates versions in a data folder."""

    def __init__(
        self,
        data_dir: Path,
        index_type: str,
        embedder,
        multilingual: MultilingualModel | None = None,
    ):
        self.english = IndexStore(data_dir, index_type)
        self.embedder = embedder
        self.multilingual = multilingual
        self.translated = (
            multilingual_store(data_dir, index_type) if multilingual is not None else None
        )

    def candidate(self, corpus_dir: Path, progress: Progress = lambda _msg: None) -> Build:
        """Validate the corpus and build a version of it beside the live one.

        Raises CorpusError with every problem, located in the moderator's own files. Only
        passages that changed are embedded (the caches are shared by all versions).
        """
        corpus = load_corpus(corpus_dir)
        index = self.english.build(
            corpus, self.embedder, progress, snapshot_of=corpus_dir, activate=False
        )
        copied = self._snapshot_corpus(index.build)
        if copied.hash != corpus.hash:
            changed = Problem(str(corpus_dir), 0, "the corpus changed while it was read; try again")
            raise CorpusError([changed])
        translated = None
        if self.multilingual is not None and self.translated is not None:
            translated = self.translated.build(
                copied, self.multilingual.passages, progress, activate=False
            )
        return Build(copied, index, translated)

    def open(self, name: str, translated_name: str | None) -> Build:
        """A kept version, from its own corpus copy. Raises VersionUnavailableError."""
        try:
            corpus = self._snapshot_corpus(name)
            index = self.english.open(name, corpus, self.embedder.name)
            translated = None
            if translated_name and self.multilingual is not None and self.translated is not None:
                translated = self.translated.open(translated_name, corpus, self.multilingual.name)
        except (CorpusError, IndexCorruptError, OSError) as exc:
            raise VersionUnavailableError(f"version {name} cannot be opened: {exc}") from exc
        return Build(corpus, index, translated)

    def activate(self, build: Build) -> None:
        """Make this version the one a restart serves (the multilingual link first)."""
        if self.translated is not None and build.translated is not None:
            self.translated.activate(build.translated.build)
        self.english.activate(build.name)

    def last_good(self) -> Build | None:
        """The current version with its own corpus copy, if there is one to fall back on."""
        name = self.english.current_build()
        if name is None or not self.english.snapshot(name).is_dir():
            return None
        translated = self.translated.current_build() if self.translated is not None else None
        try:
            return self.open(name, translated)
        except VersionUnavailableError as exc:
            log.warning("%s", exc)
            return None

    def pack(self, build: Build) -> bytes:
        """The version's build folders as one archive, for a replica that lacks them."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
            archive.add(self.english.builds / build.name, arcname=f"english/{build.name}")
            if self.translated is not None and build.translated_name is not None:
                folder = self.translated.builds / build.translated_name
                archive.add(folder, arcname=f"multilingual/{build.translated_name}")
        return buffer.getvalue()

    def unpack(self, archive: bytes) -> None:
        """Put an archive made by `pack` in place; builds already on disk are left alone.

        Each build folder appears whole or not at all (extracted aside, then renamed).
        """
        stores = {"english": self.english, "multilingual": self.translated}
        self.english.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.english.root) as staging:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                tar.extractall(staging, filter="data")
            for kind, store in stores.items():
                folder = Path(staging) / kind
                if store is None or not folder.is_dir():
                    continue
                store.builds.mkdir(parents=True, exist_ok=True)
                for build in folder.iterdir():
                    if not (store.builds / build.name).exists():
                        os.replace(build, store.builds / build.name)
                    store.remove_old_builds(keep=store.builds / build.name)

    def _snapshot_corpus(self, name: str) -> Corpus:
        return load_corpus(self.english.snapshot(name))


@dataclass(frozen=True)
class Served:
    """What a start serves, and what the corpus on disk still needs."""

    build: Build
    problems: tuple[Problem, ...] = ()  # the corpus on disk is invalid: the last good version
    unchecked: str | None = None  # the hash of a changed corpus on disk, not served yet


def serve_or_fall_back(
    versions: Versions, corpus_dir: Path, progress: Progress, gated: bool = False
) -> Served:
    """The corpus on disk, built if needed; if it is invalid, the last good version instead.

    The problems come back with the fallback so they can be logged and shown to moderators;
    with no good version to fall back on, the corpus error stands. `gated` (a bot with a
    refresh worker): a corpus that changed on disk since the current version, say by a /reload
    that a crash interrupted, waits for the quality gate; the current version is served at once.
    """
    corpus, problems = check_corpus(corpus_dir)
    if not problems and gated and (waiting := _changed_since_current(versions, corpus)):
        progress(
            f"The corpus files changed since the live version ({waiting.corpus.version}) was "
            "built: serving it until the new files pass the check /reload makes."
        )
        return Served(waiting, unchecked=corpus.hash)
    if problems:
        fallback = versions.last_good()
        if fallback is None:
            raise CorpusError(problems)
        for problem in problems:
            log.error("corpus problem (serving the last good version): %s", problem)
        progress(
            f"Warning: the corpus has {len(problems)} problem(s); serving the last good "
            f"version ({fallback.corpus.version}). Run `ipbot corpus validate` to see them."
        )
        return Served(fallback, tuple(problems))
    index = versions.english.load_or_build(corpus, versions.embedder, progress, corpus_dir)
    translated = None
    if versions.multilingual is not None and versions.translated is not None:
        translated = versions.translated.load_or_build(
            corpus, versions.multilingual.passages, progress
        )
    return Served(Build(corpus, index, translated))


def _changed_since_current(versions: Versions, corpus: Corpus) -> Build | None:
    """The current version, if the corpus on disk differs from it (None: serve the disk)."""
    manifest = versions.english.current_manifest()
    if manifest is None or manifest.corpus_hash == corpus.hash:
        return None
    return versions.last_good()
