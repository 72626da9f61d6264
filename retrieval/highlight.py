"""Choosing the sentence of a passage that answers the question, to bold it and lead with it.

Meaning alone often picks an opener that restates the topic ("X is one of the areas") or a
short closing remark; the question's own specific words and a sentence long enough to say
something point to the one that answers. A question is also nearer in meaning to the way
others ask the same thing than to the sentence that answers it, so each sentence carries the
questions it answers (corpus/highlights.yaml). Weights were set on the tuning highlights.
"""

from __future__ import annotations

import functools

import numpy as np

from retrieval.corpus import Passage
from retrieval.index import SearchIndex, tokenize

TERM_BONUS = 0.04  # cosine added per specific question term the sentence contains
MAX_TERMS = 3
MIN_WORDS = 9  # a shorter sentence rarely answers anything
SHORT_PENALTY = 0.08
DEFINITION_BONUS = 0.04  # a definition says what the thing is in its first sentence
# a sentence's meaning counts half, the nearest question it answers (Passage.asked) half:
# 0.62 -> 0.69 of the tuning highlights right (weights 0.4-0.6 all within 0.01 of it)
ASKED_WEIGHT = 0.5


@functools.lru_cache(maxsize=65_536)
def sentence_terms(sentence: str) -> frozenset[str]:
    """A sentence's search terms, kept: the same passages' sentences are read for every answer."""
    return frozenset(tokenize(sentence))


@functools.lru_cache(maxsize=16_384)
def _penalties(sentences: tuple[str, ...]) -> np.ndarray:
    """What each sentence loses for being too short to answer, kept like its terms."""
    short = [len(sentence.split()) < MIN_WORDS for sentence in sentences]
    return np.where(short, np.float32(SHORT_PENALTY), np.float32(0.0)).astype(np.float32)


def answering_sentence(
    passage: Passage,
    similarities: np.ndarray,
    question_terms: set[str],
    asked: np.ndarray | None = None,
) -> str:
    """The passage's sentence that answers, given each sentence's cosine to the question and
    its best cosine to the questions the sentence answers (`SearchIndex.asked_similarities`)."""
    sentences = passage.sentences
    shared = [len(question_terms.intersection(sentence_terms(s))) for s in sentences]
    bonus = np.array([TERM_BONUS * min(n, MAX_TERMS) for n in shared], dtype=np.float32)
    scores = np.asarray(similarities, dtype=np.float32)
    if asked is not None:
        scores = ((1 - ASKED_WEIGHT) * scores + ASKED_WEIGHT * asked).astype(np.float32)
    scores = scores + bonus
    scores -= _penalties(sentences)
    if passage.kind == "definition":
        scores[0] += DEFINITION_BONUS
    return sentences[int(np.argmax(scores))]


def nearest_sentence(index: SearchIndex, row: int, vector: np.ndarray) -> str:
    """The sentence that answers a question in another language: the multilingual model's
    cosine, averaged like the English rule's with the best cosine to the questions the sentence
    answers (embedded on the model's query side), without the rule's term bonus and length
    penalty, which were fitted on MiniLM's scale. On the tuning marks of the translated
    questions (632 passages shown): cosine alone 0.74, this 0.82, with the English rule 0.72."""
    sentences = index.passages[row].sentences
    start = index.sentence_offsets[row]
    similarities = index.sentence_vectors[start : start + len(sentences)] @ vector
    asked = index.asked_similarities(row, vector, similarities)
    return sentences[int(np.argmax((1 - ASKED_WEIGHT) * similarities + ASKED_WEIGHT * asked))]
