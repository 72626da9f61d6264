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
    LanguageReport,
    evaluate,
    evaluate_language,
    highlight_accuracy,
    load_translated_sets,
)
from retrieval.search import Retriever

DATA = Path(__file__).resolve().parent / "data"
HELDOUT = DATA / "heldout.yaml"
TRANSLATED = DATA / "heldout_translated.yaml"
# reached per language on the held-out translations (72 questions and 30 look-alikes each, in
# nineteen languages): recall@3, real questions wrongly abstained, off-topic ones abstained.
# Of the targets, recall@3 0.85 is reached in French only and off-topic abstention nowhere;
# the floors are these (rounded down), less two questions of slack: the multilingual engine is
# compiled for each machine's CPU, and a figure moved by a question from one machine to another
# (Irish recall@3). Irish and Maltese, which the model reads worst, are far below.
REACHED = {
    "de": (0.791, 0.014, 0.733), "fr": (0.861, 0.014, 0.667), "es": (0.763, 0.042, 0.767),
    "it": (0.736, 0.042, 0.700), "pl": (0.750, 0.014, 0.800), "nl": (0.777, 0.014, 0.767),
    "pt": (0.777, 0.014, 0.833), "sv": (0.763, 0.028, 0.667), "cs": (0.722, 0.014, 0.667),
    "el": (0.791, 0.042, 0.733), "hu": (0.652, 0.042, 0.800), "ro": (0.736, 0.028, 0.733),
    "fi": (0.736, 0.042, 0.733), "da": (0.791, 0.014, 0.733), "uk": (0.722, 0.028, 0.733),
    "no": (0.777, 0.028, 0.800), "tr": (0.708, 0.028, 0.700), "ga": (0.625, 0.083, 0.367),
    "mt": (0.666, 0.028, 0.333),
}  # fmt: skip


@pytest.fixture(scope="module")
def hybrid(retriever: Retriever):
    return next(r for r in evaluate(retriever, HELDOUT).modes if r.mode == "hybrid")


def test_heldout_set_is_large_enough() -> None:
    import yaml

    data = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))
    assert len(data["questions"]) + len(data["gaps"]) >= 80
    assert len(data["near_domain"]) >= 40
    translated = load_translated_sets(TRANSLATED)
    assert len(translated) >= 10
    assert all(len(s.questions) >= 40 and len(s.off_topic) >= 20 for s in translated.values())


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
    """Sentences marked by reading (tests/data/heldout_highlights.yaml): 0.71 reached (72 of
    101) with the questions each sentence answers (0.65 without), target 0.8."""
    report = highlight_accuracy(retriever, DATA / "heldout_highlights.yaml")
    assert report.judged >= 80
    assert report.accuracy >= 0.70, f"held-out highlights right: {report.accuracy:.3f}"


def test_highlights_of_questions_in_other_languages_mark_the_marked_sentence(
    retriever: Retriever,
) -> None:
    """The same marks, the questions asked in the nineteen languages of the held-out
    translations: 0.70 reached (1,076 of 1,539 shown) with the questions each sentence answers,
    0.62 with the multilingual model's sentence cosine alone."""
    report = highlight_accuracy(retriever, DATA / "heldout_highlights.yaml", TRANSLATED)
    assert report.judged >= 1200
    assert report.accuracy >= 0.69, f"held-out highlights in other languages: {report.accuracy:.3f}"


@pytest.fixture(scope="module")
def translated(retriever: Retriever) -> dict[str, LanguageReport]:
    sets = load_translated_sets(TRANSLATED)
    return {language: evaluate_language(retriever, language, sets[language]) for language in REACHED}


@pytest.mark.parametrize("language", sorted(REACHED))
def test_heldout_translations_find_the_english_passage(
    translated: dict[str, LanguageReport], language: str
) -> None:
    report = translated[language]
    slack = 2 / report.questions
    recall, wrongly, _ = REACHED[language]
    assert report.recall[3] >= recall - slack, (
        f"held-out {language}: recall@3 {report.recall[3]:.3f}"
    )
    assert report.false_abstention <= wrongly + slack, (
        f"held-out {language}: wrongly abstained {report.false_abstention:.3f}"
    )


@pytest.mark.parametrize("language", sorted(REACHED))
def test_heldout_translated_look_alikes_are_declined(
    translated: dict[str, LanguageReport], language: str
) -> None:
    report = translated[language]
    off_topic = REACHED[language][2]
    assert report.abstention_recall >= off_topic - 2 / len(report.off_topic_best), (
        f"held-out {language}: off-topic abstained {report.abstention_recall:.3f}"
    )
