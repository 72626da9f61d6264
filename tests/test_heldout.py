"""The held-out sets: questions written by someone who never saw the corpus, labelled after.

They are never used to tune keywords, the glossary or thresholds, so they show what a new
user gets. The floors below are the levels reached when the sets arrived (see
docs/retrieval.md), less one question of slack: a change that falls below them made answers
worse for real users. They are below the issues' targets where the targets are not met yet.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.evaluate import (
    evaluate,
    evaluate_language,
    highlight_accuracy,
    load_translated_sets,
)
from retrieval.search import Retriever

DATA = Path(__file__).resolve().parent / "data"
HELDOUT = DATA / "heldout.yaml"
TRANSLATED = DATA / "heldout_translated.yaml"
# recall@3 reached per language on the held-out translations (38 questions each) with the
# model reading the bridged terms and score fusion, less one question; the target is 0.85
# (met in French and Greek only)
RECALL_AT_3 = {
    "de": 0.73, "fr": 0.86, "es": 0.78, "it": 0.73, "pl": 0.68, "nl": 0.76,
    "pt": 0.76, "sv": 0.65, "cs": 0.71, "el": 0.86, "hu": 0.78,
}  # fmt: skip


@pytest.fixture(scope="module")
def hybrid(retriever: Retriever):
    return next(r for r in evaluate(retriever, HELDOUT).modes if r.mode == "hybrid")


def test_heldout_set_is_large_enough() -> None:
    import yaml

    data = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))
    assert len(data["questions"]) + len(data["gaps"]) >= 80
    assert len(data["near_domain"]) >= 40


def test_new_users_questions_find_a_passage_that_answers(hybrid) -> None:
    # reached with the scope model, and again after the glossary's everyday words and fusion
    # constant 12 (chosen on the tuning files): recall@3 0.861 (target 0.85), wrongly
    # abstained 1 of 72
    assert hybrid.recall[3] >= 0.84, f"recall@3 on held-out questions {hybrid.recall[3]:.3f}"
    assert hybrid.false_abstention <= 0.03, f"wrongly abstained {hybrid.false_abstention:.3f}"


def test_new_look_alike_questions_are_mostly_not_answered(hybrid) -> None:
    # reached: 37 of 40 (0.925; target 0.9)
    assert hybrid.near_domain_abstention >= 0.9, (
        f"held-out look-alikes abstained {hybrid.near_domain_abstention:.3f} (target 0.9)"
    )


def test_highlights_mark_the_sentence_a_reader_marked(retriever: Retriever) -> None:
    """Sentences marked by reading (tests/data/heldout_highlights.yaml): 0.63 reached, target 0.8."""
    report = highlight_accuracy(retriever, DATA / "heldout_highlights.yaml")
    assert report.judged >= 80
    assert report.accuracy >= 0.60, f"held-out highlights right: {report.accuracy:.3f}"


@pytest.mark.parametrize("language", sorted(RECALL_AT_3))
def test_heldout_translations_find_the_english_passage(retriever: Retriever, language: str) -> None:
    data = load_translated_sets(TRANSLATED)[language]
    report = evaluate_language(retriever, language, data)
    assert report.recall[3] >= RECALL_AT_3[language], (
        f"held-out {language}: recall@3 {report.recall[3]:.3f}"
    )
