"""Choosing the sentence of a passage that answers the question, to bold it and lead with it.

Meaning alone often picks an opener that restates the topic ("X is one of the areas") or a
short closing remark; the question's own specific words and a sentence long enough to say
something point to the one that answers. Weights were set by reading tuning highlights.
"""

from __future__ import annotations

import functools

import numpy as np

from retrieval.corpus import Passage
from retrieval.index import tokenize

TERM_BONUS = 0.04  # cosine added per specific question term the sentence contains
MAX_TERMS = 3
MIN_WORDS = 9  # a shorter sentence rarely answers anything
SHORT_PENALTY = 0.08
DEFINITION_BONUS = 0.04  # a definition says what the thing is in its first sentence


@functools.lru_cache(maxsize=65_536)
def sentence_terms(sentence: str) -> frozenset[str]:
    """A sentence's search terms, kept: the same passages' sentences are read for every answer."""
    return frozenset(tokenize(sentence))


def answering_sentence(passage: Passage, similarities: np.ndarray, question_terms: set[str]) -> str:
    """The passage's sentence that answers, given each sentence's cosine to the question."""
    scores = np.asarray(similarities, dtype=np.float32).copy()
    for i, sentence in enumerate(passage.sentences):
        shared = len(question_terms.intersection(sentence_terms(sentence)))
        scores[i] += TERM_BONUS * min(shared, MAX_TERMS)
        if len(sentence.split()) < MIN_WORDS:
            scores[i] -= SHORT_PENALTY
    if passage.kind == "definition":
        scores[0] += DEFINITION_BONUS
    return passage.sentences[int(np.argmax(scores))]
