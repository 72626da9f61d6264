"""Embeddings: the fast ONNX path gives the model's own vectors, and concurrent questions batch."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.embedder import (
    INT8_FILE,
    INT8_MIN_COSINE,
    Embedder,
    MicroBatcher,
    ModelNotFoundError,
    _export_key,
    _TorchBackend,
    quantize_int8,
    resolve_model_path,
)
from retrieval.search import Retriever

TEXTS = [
    "Who owns the results of a joint project?",
    "FAIR data",
    "rechte an ergebnissen",
    "🙂",
    "x" * 5000,
]


@pytest.fixture(scope="module")
def fp32(data_dir: Path, retriever: Retriever) -> Embedder:
    """The unquantised export, from the same model cache the served int8 model came from."""
    return Embedder("all-MiniLM-L6-v2", cache_dir=data_dir / "models", int8=False)


def test_onnx_vectors_match_sentence_transformers(fp32: Embedder) -> None:
    reference = _TorchBackend(resolve_model_path("all-MiniLM-L6-v2")).embed(TEXTS, 8)
    vectors = fp32.embed(TEXTS)
    assert fp32.backend == "onnx"
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(vectors * reference, axis=1))) > 0.9999


def test_int8_model_stays_close_to_fp32(retriever: Retriever, fp32: Embedder) -> None:
    served = retriever.embedder
    assert served.name.endswith("(int8, unbatched)"), "the int8 model is the default"
    cosines = np.sum(served.embed(TEXTS) * fp32.embed(TEXTS), axis=1)
    assert float(np.min(cosines)) >= INT8_MIN_COSINE


def test_order_of_a_batch_does_not_change_vectors(retriever: Retriever) -> None:
    forward = retriever.embedder.embed(TEXTS)
    backward = retriever.embedder.embed(TEXTS[::-1])[::-1]
    assert np.allclose(forward, backward, atol=1e-5)


def test_a_texts_vector_is_the_same_whatever_is_embedded_with_it(retriever: Retriever) -> None:
    """int8 quantises a call's activations together: one text per call keeps users apart."""
    question = "Who owns the results of a joint research project?"
    alone = retriever.embedder.embed([question])[0]
    hostile = ["\u202e" * 50 + "DROP TABLE; " * 30, "a", "𝕳𝖊𝖑𝖑𝖔 " * 200]
    for other in hostile:
        together = retriever.embedder.embed([other, question, other])[1]
        assert np.array_equal(alone, together)


def test_missing_model_names_the_setting(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="IPBOT_MODEL"):
        Embedder(str(tmp_path / "nothing-here"))


class CountingEmbedder:
    """Delegates to the real embedder and records the size of each call."""

    def __init__(self, real: Embedder):
        self.real, self.calls = real, []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.real.embed(texts)


async def test_concurrent_questions_are_embedded_together(retriever: Retriever) -> None:
    counting = CountingEmbedder(retriever.embedder)
    batcher = MicroBatcher(counting, max_batch=8)  # type: ignore[arg-type]
    questions = [f"question number {i} about patents" for i in range(32)]
    vectors = await asyncio.gather(*(batcher.embed(q) for q in questions))
    assert counting.calls == [8, 8, 8, 8], "32 questions asked at once were not batched"
    # int8 quantises activations per batch: compare with the same batches embedded directly
    batches = [questions[i : i + 8] for i in range(0, 32, 8)]
    expected = np.concatenate([retriever.embedder.embed(batch) for batch in batches])
    assert np.allclose(np.stack(vectors), expected, atol=1e-5)


async def test_one_bad_text_fails_alone_not_its_whole_batch(retriever: Retriever) -> None:
    batcher = MicroBatcher(retriever.embedder)
    texts = ["who owns joint results?", "bad \ud800 text", "what is FAIR data?"]
    results = await asyncio.gather(*(batcher.embed(t) for t in texts), return_exceptions=True)

    assert isinstance(results[1], Exception), "the tokenizer should reject a lone surrogate"
    good = [r for i, r in enumerate(results) if i != 1]
    assert all(isinstance(r, np.ndarray) for r in good), results
    expected = retriever.embedder.embed([texts[0], texts[2]])
    # int8 quantises activations per batch, so a text embedded in another batch differs a little
    assert np.min(np.sum(np.stack(good) * expected, axis=1)) > 0.99


@pytest.mark.slow
def test_a_damaged_onnx_export_is_exported_again(
    data_dir: Path, tmp_path: Path, fp32: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(data_dir / "models", tmp_path / "models")
    for model in (tmp_path / "models").glob("onnx-*/model.onnx"):
        model.write_bytes(model.read_bytes()[:1000])  # a disk that filled up mid-write

    embedder = Embedder("all-MiniLM-L6-v2", cache_dir=tmp_path / "models", int8=False)

    assert embedder.backend == "onnx", "a damaged export made every start fall back to PyTorch"
    assert "damaged" in caplog.text
    vectors = embedder.embed(TEXTS[:2])
    assert np.allclose(vectors, fp32.embed(TEXTS[:2]), atol=1e-5)


def _copy_model(source: Path, target: Path) -> Path:
    """A copy with new file times, as a fresh virtualenv installing the same package has."""
    return Path(shutil.copytree(source, target, copy_function=shutil.copyfile))


def test_two_copies_of_a_model_share_one_export(tmp_path: Path) -> None:
    source = Path(resolve_model_path("all-MiniLM-L6-v2"))
    first = _copy_model(source, tmp_path / "venv-a" / "model")
    second = _copy_model(source, tmp_path / "venv-b" / "model")
    (second / "config.json").touch()

    assert _export_key(str(first)) == _export_key(str(second)) == _export_key(str(source))


def test_a_changed_model_file_gets_its_own_export(tmp_path: Path) -> None:
    source = Path(resolve_model_path("all-MiniLM-L6-v2"))
    changed = _copy_model(source, tmp_path / "model")
    with (changed / "config.json").open("a") as config:
        config.write("\n")

    assert _export_key(str(changed)) != _export_key(str(source))


@pytest.mark.slow
def test_a_copied_model_runs_from_the_existing_export(
    data_dir: Path, tmp_path: Path, fp32: Embedder
) -> None:
    models = data_dir / "models"
    exports_before = {p: p.stat().st_mtime_ns for p in models.glob("onnx-*/model.onnx")}
    copy = _copy_model(Path(resolve_model_path("all-MiniLM-L6-v2")), tmp_path / "model")

    embedder = Embedder(str(copy), cache_dir=models, int8=False)

    assert embedder.backend == "onnx"
    exports_after = {p: p.stat().st_mtime_ns for p in models.glob("onnx-*/model.onnx")}
    assert exports_after == exports_before, "a copy of the same model was exported again"
    assert np.allclose(embedder.embed(TEXTS[:2]), fp32.embed(TEXTS[:2]), atol=1e-6)


async def test_embed_then_hands_on_each_vector_and_a_failure_stays_alone(
    retriever: Retriever,
) -> None:
    """The assistant ranks on the model's thread through `embed_then`: each caller's step gets
    its own text's vector, and a step that fails fails only its own caller."""
    batcher = MicroBatcher(retriever.embedder)
    texts = ["who owns joint results?", "what is FAIR data?", "licensing a patent"]

    def step(index: int):
        def then(vector: np.ndarray) -> np.ndarray:
            if index == 1:
                raise ValueError("this ranking failed")
            return vector

        return then

    results = await asyncio.gather(
        *(batcher.embed_then(t, step(i)) for i, t in enumerate(texts)), return_exceptions=True
    )

    assert isinstance(results[1], ValueError), results
    for i in (0, 2):
        assert np.array_equal(results[i], retriever.embedder.embed([texts[i]])[0])


async def test_a_text_read_on_the_model_thread_fails_alone(retriever: Retriever) -> None:
    """The assistant reads each question's language on the model's thread (a function instead of
    a text): what one reading raises reaches its own caller only, in a batch of 32."""
    batcher = MicroBatcher(retriever.embedder)
    texts = [f"question number {i} about patents" for i in range(32)]

    def read(index: int):
        def text() -> str:
            if index == 5:
                raise LookupError("handed back to another model")
            return texts[index]

        return text

    results = await asyncio.gather(
        *(batcher.embed_then(read(i), _unit) for i in range(32)), return_exceptions=True
    )

    assert isinstance(results[5], LookupError), results[5]
    expected = retriever.embedder.embed([t for i, t in enumerate(texts) if i != 5])
    assert np.array_equal(np.stack([r for i, r in enumerate(results) if i != 5]), expected)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector


@pytest.mark.slow
def test_quantising_keeps_the_quantisers_chatter_out_of_the_logs(
    data_dir: Path, tmp_path: Path, fp32: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    """A first start quantises the export once; onnxruntime's quantiser logs a line per tensor
    on the root logger, which used to fill the console between the progress bars."""
    export = next(p.parent for p in (data_dir / "models").glob("onnx-*/model.onnx"))
    folder = Path(shutil.copytree(export, tmp_path / "export"))
    (folder / INT8_FILE).unlink(missing_ok=True)
    caplog.set_level(logging.INFO)

    assert quantize_int8(folder).exists()
    logging.getLogger().info("ours, after quantising")

    assert not [r for r in caplog.records if "onnxruntime" in r.pathname]
    assert "ours, after quantising" in caplog.text, "the filter outlived the quantisation"
