"""Answers: hybrid quality on the eval set, areas, highlights, abstention and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot.replies import NOT_ABOUT_IP, NOT_COVERED, not_covered
from retrieval.abstention import names_ip_term
from retrieval.evaluate import ScopeTrial, choose_scope_setting, evaluate
from retrieval.highlight import _REFERS_BACK as REFERS_BACK
from retrieval.index import tokenize
from retrieval.scope import ScopeModel
from retrieval.search import (
    CANDIDATES,
    RESTATEMENT_COSINE,
    EmptyQuestionError,
    Retriever,
    UnknownAreaError,
    open_retriever,
    rank_by_reciprocal_fusion,
    source_key,
)

CORPUS_DIR = Path(__file__).resolve().parent.parent / "corpus"
EVAL = Path(__file__).resolve().parent / "data" / "eval.yaml"
USERS = Path(__file__).resolve().parent / "data" / "eval_users.yaml"


@pytest.fixture(scope="module")
def report(retriever: Retriever):
    return {r.mode: r for r in evaluate(retriever, EVAL).modes}


def test_hybrid_meets_the_quality_floors(report) -> None:
    hybrid = report["hybrid"]
    assert hybrid.recall[1] >= 0.8, f"recall@1 {hybrid.recall[1]:.3f}"
    assert hybrid.recall[3] >= 0.97, f"recall@3 {hybrid.recall[3]:.3f}"
    assert hybrid.mrr >= 0.87, f"MRR {hybrid.mrr:.3f}"
    assert hybrid.area_accuracy >= 0.87, f"area accuracy {hybrid.area_accuracy:.3f}"
    # the scope model is trained on corpus/scope.yaml, never on this set (reached: 1.000, 0.005)
    assert hybrid.abstention_recall >= 0.97, f"off-topic abstention {hybrid.abstention_recall:.3f}"
    assert hybrid.near_domain_abstention >= 0.975, (
        f"look-alike questions of academic life answered: {hybrid.near_domain_abstention:.3f}"
    )
    assert hybrid.false_abstention <= 0.015, f"wrongly abstained {hybrid.false_abstention:.3f}"


def test_questions_as_users_in_each_role_ask_them_find_their_passage(
    retriever: Retriever,
) -> None:
    """eval_users.yaml: 99 questions written before seeing the answers, then used for tuning.

    Reached 94 of 99 in the top 3 (3 wrongly abstained) and 11 of 12 look-alikes declined;
    the floors allow one question less.
    """
    hybrid = next(r for r in evaluate(retriever, USERS).modes if r.mode == "hybrid")
    assert hybrid.recall[3] >= 0.939, f"recall@3 {hybrid.recall[3]:.3f}"
    assert hybrid.false_abstention <= 0.041, f"wrongly abstained {hybrid.false_abstention:.3f}"
    assert hybrid.near_domain_abstention >= 0.83, (
        f"look-alike questions answered: {hybrid.near_domain_abstention:.3f}"
    )


def test_fusion_beats_each_ranking_alone(report) -> None:
    for single in ("lexical", "dense"):
        assert report["hybrid"].mrr > report[single].mrr, single
        assert report["hybrid"].recall[3] >= report[single].recall[3], single


def test_reciprocal_rank_fusion_rewards_items_ranked_well_by_both() -> None:
    assert rank_by_reciprocal_fusion([[5, 1, 2], [1, 5, 9]])[:2] == [1, 5]
    assert rank_by_reciprocal_fusion([[7], []]) == [7]


def test_answer_names_the_area_and_cites_each_passage(retriever: Retriever) -> None:
    answer = retriever.answer("how do I estimate what our patent is worth before licensing it?")
    assert answer.answered and answer.area and answer.area.slug == "valuation"
    assert len(answer.hits) == 3
    for hit in answer.hits:
        assert hit.passage.citation and hit.passage.url.startswith("https://")
        assert hit.highlight in hit.passage.sentences
    assert [h.score for h in answer.hits] != [0, 0, 0]


def test_highlight_is_the_sentence_that_answers(retriever: Retriever) -> None:
    answer = retriever.answer("what does FAIR stand for in research data?")
    best = answer.hits[0]
    assert "FAIR" in best.passage.text
    assert any(
        w in best.highlight.lower() for w in ("findable", "accessible", "interoperable", "reusable")
    )


def test_highlights_on_the_tuning_questions_mark_a_sentence_a_reader_marked(
    retriever: Retriever,
) -> None:
    from retrieval.evaluate import highlight_accuracy

    report = highlight_accuracy(retriever, EVAL.parent / "eval_highlights.yaml")
    assert report.judged >= 100
    # 0.69 reached (97 of 140); 0.678 on another machine (97 of 143): two questions of slack
    assert report.accuracy >= 0.665, f"tuning highlights right: {report.accuracy:.3f}"


def test_the_first_line_reads_on_its_own(retriever: Retriever) -> None:
    """A lead that refers back ("During that window the partner may...", "It issues...")
    comes after the sentence it refers to: the line is read without its passage."""
    questions = [q["q"] for q in yaml.safe_load(EVAL.read_text("utf-8"))["questions"]]
    leads = [a for a in map(retriever.answer, questions) if a.answered]
    assert len(leads) > 150
    for answer in leads:
        first, highlight = answer.hits[0].passage.sentences[0], answer.hits[0].highlight
        assert answer.lead.endswith(highlight)
        assert answer.lead.startswith(first) or not REFERS_BACK.search(answer.lead), answer.lead
    assert any(a.lead != a.hits[0].highlight for a in leads)  # the rule is used on this set


def test_area_filter_keeps_results_in_that_area(retriever: Retriever) -> None:
    answer = retriever.answer(
        "can we share the data from our project?", area="open-science", top_k=5
    )
    assert answer.area and answer.area.slug == "open-science"
    assert {h.passage.area for h in answer.hits} == {"open-science"}


def test_paging_returns_the_next_passages(retriever: Retriever) -> None:
    question = "what should a consortium agreement say about IP?"
    first = retriever.answer(question, top_k=3)
    second = retriever.answer(question, top_k=3, offset=3)
    assert first.has_more and second.offset == 3
    assert not {h.passage.id for h in first.hits} & {h.passage.id for h in second.hits}


@pytest.mark.parametrize(
    "question",
    [
        "what's the weather in berlin tomorrow",
        "qwpoeiru zxmcnv",
        "best recipe for lasagne",
        "🙂🙂🙂",
    ],
)
def test_off_topic_is_declined_as_no_question_about_ip(retriever: Retriever, question: str) -> None:
    """Nothing to browse for a lasagne recipe: the reply says what ipbot answers instead."""
    answer = retriever.answer(question)
    assert not answer.answered and not answer.hits and not answer.about_ip
    assert answer.suggestions == () and not_covered(answer) == NOT_ABOUT_IP


def test_a_real_question_without_an_ip_word_is_not_told_it_is_not_about_ip(
    retriever: Retriever,
) -> None:
    """The scope model turns it away, but it is close to the material transfer passages: its
    asker was told it did not look like an IP question."""
    answer = retriever.answer("what should i sign before sending samples to another lab")
    assert not answer.answered and answer.about_ip
    assert "industry-academia" in [area.slug for area in answer.suggestions]


def test_a_question_declined_within_an_area_offers_the_closest_areas(retriever: Retriever) -> None:
    """Asked within an area, a question is about IP: what is declined there is not covered."""
    answer = retriever.answer("qwpoeiru zxmcnv", area="valuation")
    assert not answer.answered and answer.about_ip and 1 <= len(answer.suggestions) <= 3
    assert not_covered(answer) == NOT_COVERED


def test_empty_question_asks_for_a_question(retriever: Retriever) -> None:
    with pytest.raises(EmptyQuestionError, match="Please type a question"):
        retriever.answer("   \n\t ")


def test_long_question_is_answered_on_its_first_part_with_a_note(retriever: Retriever) -> None:
    question = "Who owns the results of a joint research project? " + "blah " * 1000
    answer = retriever.answer(question)
    assert len(answer.question) <= 2000
    assert answer.notes and "first 2,000 characters" in answer.notes[0]


def test_unknown_area_lists_areas_and_the_closest_match(retriever: Retriever) -> None:
    with pytest.raises(UnknownAreaError) as raised:
        retriever.answer("who owns results?", area="valuaton")
    message = str(raised.value)
    assert "Did you mean 'valuation'?" in message and "open-science" in message
    with pytest.raises(UnknownAreaError) as raised:  # German for valuation: no wild guess
        retriever.answer("who owns results?", area="Bewertung")
    assert "Did you mean" not in str(raised.value) and "valuation" in str(raised.value)


def test_area_can_be_named_by_code_or_title(retriever: Retriever) -> None:
    assert retriever.resolve_area("VAL").slug == "valuation"
    assert retriever.resolve_area("IP valuation").slug == "valuation"
    assert retriever.resolve_area("Open-Science").slug == "open-science"


def test_json_contract_has_the_documented_fields(retriever: Retriever) -> None:
    data = retriever.answer("what is a consortium agreement?").to_json()
    assert set(data) == {"question", "answered", "area", "results"}
    assert set(data["area"]) == {"slug", "title"}
    fields = {"id", "area", "kind", "title", "text", "highlight", "citation", "url", "score"}
    assert all(set(r) == fields for r in data["results"])


@pytest.mark.parametrize(
    ("question", "note"),
    [
        ("Kann ich meine Erfindung patentieren?", "Die Textstellen sind auf Englisch."),
        ("¿Quién es el propietario de los resultados?", "Los pasajes están en inglés."),
    ],
)
def test_other_languages_are_told_the_passages_are_in_english(
    retriever: Retriever, question: str, note: str
) -> None:
    assert note in retriever.answer(question).notes


@pytest.mark.parametrize(
    ("question", "declined"),
    [
        ("Wie schreibe ich ein gutes Motivationsschreiben für eine Postdoc-Stelle?", "Dazu habe"),
        ("谁能帮我写求职信？", NOT_COVERED),  # no words of ours in Chinese: English
    ],
)
def test_a_declined_question_is_told_so_in_its_language_without_a_passages_note(
    retriever: Retriever, question: str, declined: str
) -> None:
    answer = retriever.answer(question)
    assert not answer.answered and answer.language != "en"
    assert not_covered(answer).startswith(declined)
    assert not any("English" in note or "Englisch" in note for note in answer.notes)


@pytest.mark.parametrize(
    "question", ["hw 2 valu patnt b4 licensin", "FAIR?", "who owns the results of a project"]
)
def test_english_with_typos_gets_no_language_note(retriever: Retriever, question: str) -> None:
    assert not any("in English" in note for note in retriever.answer(question).notes)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("MTA", "JIA-D7"),
        ("what is an NDA", "JIA-D6"),
        ("FTO", "AW-D1"),
        ("PCT", "INT-E7"),
        ("DESCA", "JIA-E1"),
        ("CA", "JIA-D4"),
    ],
)
def test_a_bare_acronym_finds_its_passage_through_the_glossary(
    retriever: Retriever, question: str, expected: str
) -> None:
    answer = retriever.answer(question)
    assert answer.answered, f"{question!r} was not answered"
    assert expected in [h.passage.id for h in answer.hits], [h.passage.id for h in answer.hits]


@pytest.mark.parametrize(
    "question",
    [
        "how do I write a cover letter for a postdoc position",
        "what is a good h-index for a professor in chemistry",
        "which statistical test should I use for paired samples in my lab data",
        "how to avoid burnout during the last year of the PhD",
    ],
)
def test_look_alike_questions_of_academic_life_are_not_answered(
    retriever: Retriever, question: str
) -> None:
    answer = retriever.answer(question)
    assert not answer.answered, f"answered {[h.passage.id for h in answer.hits]}"


@pytest.mark.parametrize(
    ("question", "expected"),
    [("how much is our patent worth", "VAL-D1"), ("what is an MoU", "INT-R1")],
)
def test_everyday_words_find_the_passage_through_the_glossary(
    retriever: Retriever, question: str, expected: str
) -> None:
    answer = retriever.answer(question)
    assert expected in [h.passage.id for h in answer.hits[:3]], [h.passage.id for h in answer.hits]


def test_an_everyday_word_of_the_glossary_does_not_make_a_question_about_ip(
    retriever: Retriever,
) -> None:
    assert not retriever.answer("bitcoin price today").answered


def test_a_loosely_phrased_question_naming_an_ip_term_is_answered(retriever: Retriever) -> None:
    assert retriever.answer("how do we price a licence?").answered


def test_scores_shown_follow_the_order_of_the_passages(retriever: Retriever) -> None:
    hits = retriever.answer("who owns the results of a joint research project?", top_k=5).hits
    scores = [h.score for h in hits]
    assert scores[0] == 1.0 and scores == sorted(scores, reverse=True)


def test_one_answer_never_restates_a_point_from_the_same_source(retriever: Retriever) -> None:
    index = retriever.index
    for question in ("export control for dual-use research", "what is IP valuation"):
        hits = retriever.answer(question, top_k=5).hits
        for i, a in enumerate(hits):
            for b in hits[i + 1 :]:
                same_source = source_key(a.passage) == source_key(b.passage)
                rows = index.passages.index(a.passage), index.passages.index(b.passage)
                cosine = float(index.vectors[rows[0]] @ index.vectors[rows[1]])
                assert not (same_source and cosine >= RESTATEMENT_COSINE), (
                    a.passage.id,
                    b.passage.id,
                )


def test_fusion_ranks_only_each_rankers_top_candidates(retriever: Retriever) -> None:
    state = retriever.state
    question = "who owns the results of a joint research project?"
    vector = retriever.embedder.embed([retriever.search_text(question)])[0]
    ranking = retriever.rank(state, question, vector, None, "hybrid")
    assert len(ranking.rows) <= 2 * CANDIDATES
    assert int((ranking.dense > -1.0).sum()) == min(CANDIDATES, len(state.index.passages))


@pytest.mark.parametrize(
    ("question", "names_ip"),
    [
        ("who owns the code i wrote as a postdoc?", True),
        ("how did glasgow's give-away-IP-for-free scheme work", True),
        ("FTO", True),
        ("can our spin-off use the lab's know-how", True),
        ("how do I start my own lab after the postdoc", False),
        ("what is the deadline for the next ERC Starting Grant call", False),
        ("which open access journal should I choose", False),
    ],
)
def test_only_ip_words_and_ip_glossary_terms_name_an_ip_concept(
    retriever: Retriever, question: str, names_ip: bool
) -> None:
    assert names_ip_term(question, retriever.corpus.glossary) is names_ip


def test_an_unlabelled_question_set_measures_abstention_only(
    retriever: Retriever, tmp_path: Path
) -> None:
    questions = tmp_path / "unlabelled.yaml"
    questions.write_text(
        "questions:\n- who owns the results of a joint research project?\n"
        "near_domain:\n- how do I write a cover letter for a postdoc position\n"
    )
    report = evaluate(retriever, questions)
    hybrid = next(r for r in report.modes if r.mode == "hybrid")
    assert hybrid.false_abstention == 0.0 and hybrid.near_domain_abstention == 1.0
    assert report.misses == []


def test_scope_model_fit_is_deterministic_and_separates_its_examples() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(60) < 0.4).astype(float)
    features = rng.normal(size=(60, 5))
    features[:, 0] += np.where(labels == 1, 4.0, -4.0)  # one feature tells the kinds apart
    first, second = ScopeModel.fit(features, labels), ScopeModel.fit(features, labels)
    assert np.array_equal(first.weights, second.weights)
    guesses = [first.probability(row) >= 0.5 for row in features]
    assert guesses == [bool(label) for label in labels]


def test_a_look_alike_moderators_add_to_the_scope_examples_is_then_abstained(
    tmp_path: Path, data_dir: Path, retriever: Retriever
) -> None:
    question = "how do I join a Horizon Europe consortium as an SME"
    unseen = "how can our startup join an EU-funded research consortium"
    assert retriever.answer(question).answered, "the example must show a leak first"
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS_DIR, corpus)
    with (corpus / "scope.yaml").open("a") as scope:  # near_domain is the file's last list
        scope.write(
            f"- {question}\n"
            "- how can a small company become a partner in an EU research project\n"
            "- where do SMEs find calls to join a research consortium\n"
        )
    data = tmp_path / "data"
    (data / "index").mkdir(parents=True)
    (data / "models").symlink_to(data_dir / "models", target_is_directory=True)
    for cache in (data_dir / "index").glob("embedding-cache-*.npz"):  # embed only the new ones
        shutil.copy(cache, data / "index")
    extended = open_retriever(corpus, data, "all-MiniLM-L6-v2", multilingual=False)
    assert not extended.answer(question).answered
    assert not extended.answer(unseen).answered, "a variant nobody added is declined too"
    real = "what should our SME check in the consortium agreement before signing"
    assert extended.answer(real).answered


def test_choosing_a_scope_setting_prefers_the_smoother_of_equals() -> None:
    trials = [
        ScopeTrial(0.01, 0.5, near_domain=0.97, wrongly=0.010),
        ScopeTrial(0.1, 0.4, near_domain=0.968, wrongly=0.012),
        ScopeTrial(0.1, 0.6, near_domain=0.99, wrongly=0.030),  # too many real ones lost
        ScopeTrial(1.0, 0.3, near_domain=0.90, wrongly=0.005),
    ]
    assert choose_scope_setting(trials) == trials[1]


@pytest.mark.parametrize(
    "question", ["Who owns joint results?", "MTA for cell lines", "patent patent licence"]
)
def test_bm25_scores_are_the_ones_bm25s_computes(retriever: Retriever, question: str) -> None:
    """Ranking sums the terms' postings itself (fast at 100,000 passages); same scores."""
    vector = retriever.embedder.embed([retriever.search_text(question)])[0]
    ranking = retriever.rank(retriever.state, question, vector, None, "hybrid")
    expected = retriever.index.lexical.get_scores(tokenize(retriever.search_text(question)))
    assert np.allclose(ranking.lexical, expected, atol=1e-5)


def test_one_countrys_law_answers_only_questions_that_name_that_country(
    retriever: Retriever,
) -> None:
    """German employee-invention law (IAM-E12) shares its words with every question about who
    owns an invention: it led the answer to a question that names no country, and came second
    for a professor in Sweden. A question that names Germany, in any language, still gets it."""

    def shown(question: str) -> list[str]:
        return [hit.passage.id for hit in retriever.answer(question).hits]

    assert "IAM-E12" not in shown("who owns an invention made by a professor?")
    assert "IAM-E12" not in shown("I am a professor in Sweden, do I own my inventions?")
    assert shown("in Germany does the university own what I invent")[0] == "IAM-E12"
    assert (
        shown("Ich bin Professorin in Deutschland: gehört meine Erfindung der Hochschule?")[0]
        == "IAM-E12"
    )
    swedish = shown("Je suis chercheur en Suède, à qui appartient mon invention ?")
    assert swedish[0] == "IAM-E11" and "IAM-E12" not in swedish
