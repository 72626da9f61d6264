"""Choosing the sentence of a passage that answers the question, to bold it and lead with it.

Meaning alone often picks an opener that restates the topic ("X is one of the areas") or a
short closing remark; the question's own specific words and a sentence long enough to say
something point to the one that answers. A question is also nearer in meaning to the way
others ask the same thing than to the sentence that answers it, so each sentence carries the
questions it answers (corpus/highlights.yaml). Weights were set on the tuning highlights.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from retrieval.index import SearchIndex, tokenize

TERM_BONUS = 0.04  # cosine added per specific question term the sentence contains
MAX_TERMS = 3
MIN_WORDS = 9  # a shorter sentence rarely answers anything
SHORT_PENALTY = 0.08
DEFINITION_BONUS = 0.04  # a definition says what the thing is in its first sentence
# a sentence's meaning counts half, the nearest question it answers (Passage.asked) half:
# 0.62 -> 0.69 of the tuning highlights right (weights 0.4-0.6 all within 0.01 of it)
ASKED_WEIGHT = 0.5


# a sentence that leans on the one before it: "It issues certificates...", "During that window
# the partner may...", "The estimate should then be updated..."
_REFERS_BACK = re.compile(
    r"^(?:(?:This|These|That|Those|It|Its|They|Their|Such|Second|Third|Finally|Typical|Otherwise"
    r"|However|Instead|Moreover|Therefore|Thus)\b(?!-)|(?:First|Doing so|In that case"
    r"|In this case),|During that\b)|^(?:\S+\s+){1,7}then\b"
)


def standalone(sentence: str, sentences: tuple[str, ...]) -> str:
    """`sentence` as a line that reads on its own: after the sentences before it that it
    refers back to (the answer's first line is read without the passage around it)."""
    end = start = sentences.index(sentence) if sentence in sentences else 0
    while start > 0 and _REFERS_BACK.search(sentences[start]):
        start -= 1
    return " ".join(sentences[start : end + 1]) if end else sentence


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
    index: SearchIndex, row: int, vector: np.ndarray, question_terms: set[str]
) -> str:
    """The sentence of the passage in `row` that answers an English question: meaning and the
    questions each sentence answers, plus the question's specific terms (`question_terms`)
    that a sentence contains, less a penalty for sentences too short to answer."""
    passage = index.passages[row]
    sentences = passage.sentences
    shared = [len(question_terms.intersection(sentence_terms(s))) for s in sentences]
    bonus = np.array([TERM_BONUS * min(n, MAX_TERMS) for n in shared], dtype=np.float32)
    scores = _meaning_and_questions(index, row, vector) + bonus
    scores -= _penalties(sentences)
    if passage.kind == "definition":
        scores[0] += DEFINITION_BONUS
    return sentences[int(np.argmax(scores))]


def nearest_sentence(index: SearchIndex, row: int, vector: np.ndarray) -> str:
    """The sentence that answers a question in another language: meaning and the questions
    each sentence answers, as in English, without the English rule's term bonus and length
    penalty, which were fitted on MiniLM's scale. On the tuning marks of the translated
    questions (632 passages shown): cosine alone 0.74, this 0.82, with the English rule 0.72."""
    sentences = index.passages[row].sentences
    return sentences[int(np.argmax(_meaning_and_questions(index, row, vector)))]


def _meaning_and_questions(index: SearchIndex, row: int, vector: np.ndarray) -> np.ndarray:
    """Per sentence of the passage in `row`: its cosine to the question, averaged with the best
    cosine to the questions the sentence answers (`SearchIndex.asked_similarities`; a sentence
    without any keeps its own). The index's model made `vector`: MiniLM's or e5's query side."""
    start = index.sentence_offsets[row]
    count = len(index.passages[row].sentences)
    similarities = index.sentence_vectors[start : start + count] @ vector
    asked = index.asked_similarities(row, vector, similarities)
    mixed = (1 - ASKED_WEIGHT) * np.asarray(similarities, dtype=np.float32) + ASKED_WEIGHT * asked
    return mixed.astype(np.float32)
