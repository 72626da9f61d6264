"""The synthetic corpus of `ipbot bench --passages`: the same every time, and answerable."""

from __future__ import annotations

import numpy as np

from bot.scale import synthetic_corpus, synthetic_index
from retrieval.search import Retriever


def test_the_synthetic_corpus_is_the_same_every_time(retriever: Retriever) -> None:
    first = synthetic_index(retriever.index, 500, "flat")
    second = synthetic_index(retriever.index, 500, "flat")

    assert [p.text for p in first.passages] == [p.text for p in second.passages]
    assert np.array_equal(first.vectors, second.vectors)
    assert len({p.text for p in first.passages}) > 450, "the passages mostly repeat each other"


def test_synthetic_passages_are_answered_with_their_own_sentences(retriever: Retriever) -> None:
    index = synthetic_index(retriever.index, 500, "flat")
    large = Retriever(
        synthetic_corpus(retriever.corpus, index), index, retriever.embedder, retriever.policy
    )

    answer = large.answer("Who owns the results of a joint research project?")

    assert answer.answered and answer.hits
    assert all(hit.highlight in hit.passage.sentences for hit in answer.hits)
    assert len(index.sentence_vectors) == sum(len(p.sentences) for p in index.passages)
