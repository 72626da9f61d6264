"""Questions in other languages: detection, the multilingual path, its abstention and notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from bot.assistant import Assistant, User
from bot.replies import AnswerReply
from bot.scale import synthetic_index
from retrieval.abstention import names_ip_concept
from retrieval.evaluate import (
    DEFAULT_EVAL_FILE,
    TRANSLATED_EVAL_FILE,
    LanguageReport,
    evaluate_language,
    highlight_accuracy,
    load_translated_sets,
)
from retrieval.glossary import LANGUAGES as GLOSSARY_LANGUAGES
from retrieval.multilingual import (
    DENSE_POOL,
    MODEL_NAME,
    NOTES,
    combined_similarity,
    language_by_spelling,
    multilingual_store,
    passages_note,
    rank_dense,
    scope_margin,
)
from retrieval.search import ENGLISH_NOTE, Retriever, bridge_terms, open_retriever
from tests.conftest import CORPUS_DIR

LANGUAGES = list(load_translated_sets(TRANSLATED_EVAL_FILE))
# recall@3 per language reached on the tuning set (56 questions each), less one question of
# slack for the engine's CPU-specific build; below this, users of that language lose answers
RECALL_AT_3 = {
    "de": 0.94,
    "fr": 0.94,
    "es": 0.92,
    "it": 0.92,
    "pl": 0.94,
    "nl": 0.89,
    "pt": 0.96,
    "sv": 0.89,
    "cs": 0.94,
    "el": 0.92,
    "hu": 0.89,
}
# of 32 per language (12 easy, 20 near-domain): reached 23 in Polish, 24-29 elsewhere, since
# abstention weighs the scope margin (17-27 before); less one
OFF_TOPIC_ABSTAINED = 0.68


@pytest.fixture(scope="module")
def reports(retriever: Retriever) -> dict[str, LanguageReport]:
    sets = load_translated_sets(TRANSLATED_EVAL_FILE)
    return {lang: evaluate_language(retriever, lang, data) for lang, data in sets.items()}


def test_tuning_set_covers_eleven_languages_with_fifty_questions_each() -> None:
    sets = load_translated_sets(TRANSLATED_EVAL_FILE)
    assert len(sets) >= 11
    assert all(len(s.questions) >= 50 and len(s.off_topic) >= 30 for s in sets.values())


@pytest.mark.parametrize("language", LANGUAGES)
def test_questions_in_other_languages_find_the_right_english_passage(
    reports: dict[str, LanguageReport], language: str
) -> None:
    report = reports[language]
    assert report.recall[3] >= RECALL_AT_3[language], (
        f"in {language}, only {report.recall[3]:.2f} of questions had the right passage in the "
        "top 3"
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_off_topic_questions_in_other_languages_are_abstained(
    reports: dict[str, LanguageReport], language: str
) -> None:
    report = reports[language]
    assert report.abstention_recall >= OFF_TOPIC_ABSTAINED, (
        f"in {language}, {1 - report.abstention_recall:.0%} of off-topic questions got passages"
    )


def test_glossary_bridges_a_foreign_question_to_english_terms(retriever: Retriever) -> None:
    question = "Mennyit ér a szabadalmunk, mielőtt licencbe adjuk egy spin-off cégnek?"
    terms, ip_concept = bridge_terms(retriever.state, question, "hu")
    assert {"patent", "licence licensing", "spin-off company"} <= set(terms)
    assert ip_concept


def test_the_model_reads_the_bridged_english_terms_with_the_question(
    retriever: Retriever,
) -> None:
    question = "Wie viel ist unser Patent wert, bevor wir es lizenzieren?"
    query = retriever.query_text(question, "de")
    assert query.startswith(question)  # the user's words first and unchanged
    assert "patent" in query and "licence licensing" in query


def test_a_large_corpus_is_ranked_from_faiss_candidates_with_the_same_top(
    retriever: Retriever,
) -> None:
    translated = retriever.state.translated
    assert translated is not None and retriever.multilingual is not None
    large = synthetic_index(translated, 3 * DENSE_POOL, "flat")
    vector = retriever.multilingual.model.queries.embed(["Wem gehört eine Erfindung?"])[0]
    ranking = rank_dense(large, vector)
    everything = combined_similarity(large, vector, np.arange(len(large.passages)))
    assert len(ranking.rows) == DENSE_POOL  # a third of the passages scored
    assert ranking.rows[:3].tolist() == np.argsort(-everything)[:3].tolist()


def test_acronyms_are_bridged_only_as_the_glossary_writes_them(retriever: Retriever) -> None:
    terms, _ = bridge_terms(retriever.state, "Wat zet je in een NDA met een bedrijf?", "nl")
    assert "non-disclosure agreement" in terms
    assert "Enterprise Europe Network" not in terms  # Dutch "een" is not EEN


def test_words_academic_life_shares_with_ip_do_not_vouch_for_an_answer() -> None:
    assert not names_ip_concept(["agreement contract", "partners", "database"])
    assert names_ip_concept(["agreement contract", "patent"])


def test_every_english_eval_question_keeps_the_english_path(retriever: Retriever) -> None:
    data = yaml.safe_load(DEFAULT_EVAL_FILE.read_text(encoding="utf-8"))
    routed = [q["q"] for q in data["questions"] if retriever.language_of(q["q"]) != "en"]
    assert not routed, f"English questions sent to the multilingual model: {routed}"


@pytest.mark.parametrize(
    ("question", "language", "about_ip"),
    [
        ("Wem gehören die Ergebnisse, wenn zwei Partner gemeinsam etwas entwickeln?", "de", True),
        ("Wie bewerbe ich mich auf eine Postdoc-Stelle in Frankreich?", "de", False),
        ("Kto jest właścicielem wyników wspólnego projektu z firmą?", "pl", True),
        ("Jak zarezerwować salę na seminarium na wydziale?", "pl", False),
    ],
)
def test_scope_examples_tell_ip_questions_from_look_alikes_in_any_language(
    retriever: Retriever, question: str, language: str, about_ip: bool
) -> None:
    state, multilingual = retriever.state, retriever.multilingual
    assert state.translated is not None and multilingual is not None
    examples = len(state.corpus.scope.examples()[0])
    assert state.translated.scope_vectors is not None
    assert state.translated.scope_vectors.shape == (examples, multilingual.model.dimension)
    text = retriever.query_text(question, language)
    vector = multilingual.model.queries.embed([text])[0]
    assert (scope_margin(state.translated, state.about_ip, vector) > 0) == about_ip


def test_english_chat_that_looks_foreign_to_langdetect_keeps_the_english_path(
    retriever: Retriever,
) -> None:
    chat = ["tell me a joke", "explain quantum computing", "how do i change a car tyre"]
    assert [retriever.language_of(q) for q in chat] == ["en"] * len(chat)
    assert not any(retriever.answer(q).answered for q in chat)
    # a short question in another language keeps its path, words shared with English or not
    assert retriever.language_of("Wer besitzt das Patent?") == "de"
    assert retriever.language_of("Qui possède le brevet de mon invention ?") == "fr"


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("Cé leis an aireagán a rinne mé le linn mo PhD?", "ga"),
        ("An bhfuil cead agam mo thráchtas a fhoilsiú sula gcomhdaítear an phaitinn?", "ga"),
        ("Conas is féidir liom ceadúnas a thabhairt do chuideachta?", "ga"),
        ("Min hu s-sid tal-invenzjoni li għamilt waqt il-PhD tiegħi?", "mt"),
        ("Kif nipproteġi s-software li ktibt fl-università?", "mt"),
        ("Liema ftehim niffirmaw mal-kumpanija qabel il-proġett?", "mt"),
    ],
)
def test_irish_and_maltese_are_told_by_their_spelling(
    retriever: Retriever, question: str, language: str
) -> None:
    # langdetect has no profiles for these two official EU languages
    assert retriever.language_of(question) == language


def test_no_question_in_another_language_is_read_as_irish_or_maltese(
    retriever: Retriever,
) -> None:
    misread = []
    for path in sorted(Path(__file__).parent.glob("data/*translated*.yaml")):
        for lang, data in load_translated_sets(path).items():
            if lang not in ("ga", "mt"):
                texts = [q.question for q in data.questions] + list(data.off_topic)
                misread += [t for t in texts if language_by_spelling(t)]
    assert not misread, misread


def test_reply_says_in_the_users_language_that_passages_are_english(
    retriever: Retriever,
) -> None:
    answer = retriever.answer(
        "Wem gehören die Ergebnisse, die zwei Partner gemeinsam erzielt haben?"
    )
    assert answer.answered and answer.area
    assert NOTES["de"] in answer.notes
    assert all(h.highlight in h.passage.sentences and h.passage.url for h in answer.hits)


def test_language_without_words_of_our_own_gets_the_note_in_english() -> None:
    assert passages_note("ja") == "The passages are in English."


def test_every_language_the_glossary_knows_gets_the_note_in_its_own_words() -> None:
    missing = sorted(GLOSSARY_LANGUAGES - set(NOTES))
    assert not missing, f"users writing in {missing} are told in English that passages are English"


def test_a_translated_set_with_a_bare_no_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "set.yaml"
    path.write_text("languages: [da, no]\nquestions: []\n", encoding="utf-8")
    with pytest.raises(ValueError, match="string"):
        load_translated_sets(path)  # YAML reads no as false: Norwegian would be measured as 0


def test_area_filter_works_for_questions_in_other_languages(retriever: Retriever) -> None:
    answer = retriever.answer(
        "Wie bewertet man ein Patent vor der Lizenzvergabe?", area="valuation"
    )
    assert answer.hits and all(h.passage.area == "valuation" for h in answer.hits)


def test_platform_language_is_a_hint_that_settles_close_calls(retriever: Retriever) -> None:
    question = "Vad betyder nyttiggörande egentligen?"  # langdetect alone leans to Danish
    assert retriever.language_of(question) == "da"
    assert retriever.language_of(question, hint="sv-SE") == "sv"
    assert retriever.language_of(question, hint="en") == "da"  # a hint never overrides the text
    # langdetect knows no Irish: the hint settles a question with a single cue of its spelling
    assert retriever.language_of("Conas paitinn a chosaint?", hint="ga-IE") == "ga"
    assert retriever.language_of("Can Ann patent her invention?", hint="ga") == "en"


@pytest.mark.parametrize(
    "question, hint",
    [
        ("Umowa licencyjna?", "pl"),  # two words: too few for the share of English words
        ("Brevetto unitario?", "it"),
        ("Octrooi aanvragen?", "nl"),
        ("Kdo je lastnik izuma?", "sl"),  # langdetect: Croatian
        ("Ko je vlasnik pronalaska?", "sr"),  # langdetect has no Serbian: Croatian
        ("Ко је власник проналаска?", "sr"),  # and in Cyrillic: Macedonian
    ],
)
def test_the_platforms_language_settles_short_and_neighbouring_questions(
    retriever: Retriever, question: str, hint: str
) -> None:
    assert retriever.language_of(question, hint=hint) == hint


def test_short_english_stays_english_whatever_the_platforms_language(
    retriever: Retriever,
) -> None:
    for question in ("FTO?", "patent licence", "MTA", "spin-off equity"):
        assert retriever.language_of(question, hint="de") == "en", question


async def test_telegram_users_language_code_reaches_the_answer(assistant: Assistant) -> None:
    user = User("telegram", "42", language="sv")
    reply = await assistant.ask(user, "Vad betyder nyttiggörande egentligen?")
    assert NOTES["sv"] in reply.answer.notes  # type: ignore[union-attr]


async def test_more_and_sources_continue_the_answer_in_its_language(assistant: Assistant) -> None:
    """Read with the asker's hint, this question is Swedish; alone, langdetect takes it for
    French. Sources and More searched again without the hint (and a Discord press carries
    none), so they showed other passages, with a French note."""
    asked = await assistant.ask(User("telegram", "42", "sv"), "Hur licensierar vi en patent?")
    assert isinstance(asked, AnswerReply) and asked.question_id is not None
    assert NOTES["sv"] in asked.answer.notes

    sources = await assistant.sources(User("telegram", "42", "sv"), asked.question_id)
    more = await assistant.more(User("discord", "7"), asked.question_id, 3)

    assert [p.id for p in sources] == [hit.passage.id for hit in asked.answer.hits]  # type: ignore[union-attr]
    assert isinstance(more, AnswerReply) and NOTES["sv"] in more.answer.notes
    shown = {hit.passage.id for hit in asked.answer.hits}
    assert not shown & {hit.passage.id for hit in more.answer.hits}


def test_multilingual_index_is_kept_beside_the_first(retriever: Retriever, data_dir: Path) -> None:
    store = multilingual_store(data_dir)
    assert store.root.parent == data_dir / "index"
    index = store.load(retriever.corpus, MODEL_NAME)
    assert index is not None and index.title_vectors is not None
    assert [p.id for p in index.passages] == [p.id for p in retriever.index.passages]


def test_setting_turns_the_multilingual_path_off(retriever: Retriever, data_dir: Path) -> None:
    english_only = open_retriever(CORPUS_DIR, data_dir, "all-MiniLM-L6-v2", multilingual=False)
    question = "Kann ich meine Erfindung patentieren?"
    assert english_only.language_of(question) == "en"
    assert ENGLISH_NOTE in english_only.answer(question).notes


def test_questions_asked_are_read_on_the_multilingual_models_query_side(
    retriever: Retriever,
) -> None:
    """e5 compares two questions on its query side (`query: ` on both): the questions each
    sentence answers are embedded there, like the user's question they are compared with."""
    assert retriever.multilingual is not None
    index, model = retriever.multilingual.index, retriever.multilingual.model
    assert index.asked_vectors is not None
    first = next(q for questions in index.passages[0].asked for q in questions)
    text = retriever.search_text(first)

    assert np.allclose(index.asked_vectors[0], model.queries.embed([text])[0], atol=1e-4)
    assert not np.allclose(index.asked_vectors[0], model.passages.embed([text])[0], atol=1e-3)


def test_highlights_of_translated_questions_mark_a_sentence_a_reader_marked(
    retriever: Retriever,
) -> None:
    """The tuning marks (tests/data/eval_highlights.yaml), asked in the tuning translations'
    eleven languages: 0.80 of the highlights shown (307 of 382) with the questions each sentence
    answers, 0.72 (274) with the model's sentence cosine alone."""
    marks = TRANSLATED_EVAL_FILE.parent / "eval_highlights.yaml"
    report = highlight_accuracy(retriever, marks, TRANSLATED_EVAL_FILE)
    assert report.judged >= 300
    assert report.accuracy >= 0.79, f"translated highlights right: {report.accuracy:.3f}"
