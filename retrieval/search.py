"""Answering a question: hybrid ranking, area choice, highlighting and the decision to abstain.

Dense vectors find paraphrases, BM25 finds exact terms (acronyms, regulation numbers); their
rankings are fused by reciprocal rank. Whether to answer at all is decided on the dense
similarity of the best passage and the scope model's view of the question (`retrieval.scope`).
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from retrieval.abstention import (
    AbstentionPolicy,
    Mode,
    Signals,
    names_ip_concept,
    names_ip_term,
    specific_terms,
)
from retrieval.corpus import (
    AREA_PREFIXES,
    Area,
    Corpus,
    CorpusError,
    Passage,
    Problem,
    names_country,
)
from retrieval.embedder import Embedder
from retrieval.highlight import answering_sentence, nearest_sentence, standalone
from retrieval.index import (
    Progress,
    SearchIndex,
    known_word_share,
    search_text,
    tokenize,
)
from retrieval.multilingual import (
    BRIDGE_WEIGHT,
    ENGLISH,
    DenseRanking,
    LanguageDetector,
    Multilingual,
    MultilingualModel,
    MultilingualUnavailableError,
    abstains_translated,
    passages_note,
    rank_dense,
    scope_margin,
)
from retrieval.multilingual import MODEL_NAME as MULTILINGUAL_MODEL
from retrieval.scope import ScopeModel, scope_features, trainable
from retrieval.versions import Versions, serve_or_fall_back

MODES: tuple[Mode, ...] = ("lexical", "dense", "hybrid")
MAX_QUESTION_CHARS = 2000
MIN_KNOWN_WORDS = 0.2  # below this share of English or corpus words, say we read English
ENGLISH_NOTE = (
    "I read questions in English, so in another language I may miss the best passages. "
    "Try asking in English."
)
log = logging.getLogger(__name__)
RRF_K = 60
# the best passage cosine under which a question the scope model turns away is told it is not
# about IP; above it, the decline offers the closest areas. Of 5 real questions worded without
# an IP word (samples, code, notebooks, an algorithm) 4 are above; of the 384 tuning look-alikes
# declined as not about IP, 101 are (they get the general decline, which is also true)
NOT_ABOUT_IP_BELOW = 0.38
# English hybrid fusion: with a few hundred passages only each ranker's first places matter, so
# a passage one ranker is sure of (BM25 on a rare term, the embedding on a paraphrase) should
# not lose to one both find middling. On the tuning files (eval.yaml, eval_users.yaml,
# scope.yaml: 473 questions) 10-12 found 2 more in the top 3 than 60, 15 one, 20-60 none; 8
# lost one of eval.yaml. The multilingual path keeps RRF_K.
HYBRID_RRF_K = 12
_EU_ACT = re.compile(r"\((?:EU|EC|EEC)\) (?:No )?\d{2,4}/\d+")
RESTATEMENT_COSINE = 0.845  # same source and this similar: the same point said twice
# what a passage of one country's law keeps of its score when the question names another
# country or none: about fifteen places lower in the fused ranking, off the first page
ELSEWHERE_FACTOR = 0.6
CANDIDATES = 100  # rows taken from each ranker before fusion
SEARCHES_KEPT = 4096  # questions whose searched text, or bridged terms, are kept (`_kept`)
Key = TypeVar("Key")
Value = TypeVar("Value")


class UserInputError(ValueError):
    """A problem with what the user typed; its message is written for that user."""


class EmptyQuestionError(UserInputError):
    def __init__(self) -> None:
        super().__init__(
            "Please type a question, for example: "
            '"Who owns the results of a joint research project?"'
        )


class UnknownAreaError(UserInputError):
    def __init__(self, given: str, areas: Sequence[Area], closest: Area | None):
        listing = ", ".join(a.slug for a in areas)
        hint = f" Did you mean '{closest.slug}'?" if closest else ""
        shown = given if len(given) <= 60 else given[:60].rsplit(" ", 1)[0] + "…"  # echo briefly
        super().__init__(f"There is no area called '{shown}'.{hint} The areas are: {listing}.")
        self.closest = closest


@dataclass(frozen=True)
class Hit:
    """A passage chosen for an answer, with why it was chosen and its best sentence."""

    passage: Passage
    score: float
    highlight: str
    area: Area | None = None  # the passage's area


@dataclass(frozen=True)
class Answer:
    """Everything an adapter needs to show one answer; plain data, no platform formatting."""

    question: str
    answered: bool
    area: Area | None
    hits: tuple[Hit, ...] = ()
    suggestions: tuple[Area, ...] = ()
    notes: tuple[str, ...] = ()
    offset: int = 0
    has_more: bool = False
    language: str = ENGLISH  # the language the question was read in: replies use its words
    about_ip: bool = True  # False: declined as no question about IP (a cover letter, a salary)

    @property
    def lead(self) -> str:
        """One line that answers: the highlighted sentence of the best passage (after the one
        before it, when it refers back to it: "It issues certificates...")."""
        if not (self.answered and self.hits):
            return ""
        return standalone(self.hits[0].highlight, self.hits[0].passage.sentences)

    def elsewhere(self, hit: Hit) -> str:
        """ " — <area>" after the heading of a passage from another area than the answer's (the
        best passage's), "" otherwise: every passage is labelled with its area, and the common
        case, one area, says it once."""
        if hit.area is None or self.area is None or hit.area.slug == self.area.slug:
            return ""
        return f" — {hit.area.title}"

    def to_json(self) -> dict:
        """The CLI's JSON contract: question, answered, area, results."""
        return {
            "question": self.question,
            "answered": self.answered,
            "area": {"slug": self.area.slug, "title": self.area.title} if self.area else None,
            "results": [
                {
                    "id": h.passage.id,
                    "area": h.passage.area,
                    "kind": h.passage.kind,
                    "title": h.passage.title,
                    "text": h.passage.text,
                    "highlight": h.highlight,
                    "citation": h.passage.citation,
                    "url": h.passage.url,
                    "score": round(h.score, 4),
                }
                for h in self.hits
            ],
        }


@dataclass(frozen=True)
class Ranking:
    """All passages ordered for one question, with the signals abstention needs."""

    rows: list[int]
    dense: np.ndarray
    lexical: np.ndarray
    mode: Mode
    order_scores: dict[int, float]
    in_scope: float = 1.0  # the scope model's probability that the question is about IP

    def score(self, row: int) -> float:
        """The score that decided the order, scaled so that the first passage has 1.0."""
        top = self.order_scores[self.rows[0]]
        return self.order_scores[row] / top if top else 0.0


def fuse_scores(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion: each item scores the sum of 1 / (k + rank) over the rankings."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, k + 1):
            scores[item] = scores.get(item, 0.0) + 1 / rank
    return scores


def best_first(scores: dict[int, float]) -> list[int]:
    """The items by score, best first, ties by item (sorted in NumPy: in Python, with a key
    function, it cost more than FAISS's search)."""
    items = np.fromiter(scores, dtype=np.int64, count=len(scores))
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    return items[np.lexsort((items, -values))].tolist()


def rank_by_reciprocal_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Merge rankings of the same items, best fused score first."""
    return best_first(fuse_scores(rankings, k))


def _rank_scores(rows: Sequence[int]) -> dict[int, float]:
    """A single ranking's order as scores, so every mode reports one that explains its order."""
    return {row: 1.0 / (RRF_K + rank + 1) for rank, row in enumerate(rows)}


def _dense_scores(
    index: SearchIndex, vector: np.ndarray, area: Area | None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of the question to the top candidates (all of an area's passages), -1 elsewhere;
    and the candidates' rows."""
    total = len(index.passages)
    dense = np.full(total, -1.0, dtype=np.float32)
    if area is not None:
        rows = index.rows_in(area.slug)
        dense[rows] = index.vectors[rows] @ vector
        return dense, rows
    query = vector.reshape(1, -1).astype(np.float32)
    scores, found = index.dense.search(query, min(CANDIDATES, total))
    valid = found[0] >= 0
    rows = found[0][valid]
    dense[rows] = scores[0][valid]
    return dense, rows


def _lexical_scores(index: SearchIndex, tokens: Sequence[str]) -> np.ndarray:
    """BM25 score of every passage, summed from the postings of the question's terms only.

    bm25s keeps each term's precomputed scores by passage (a sparse column per term); one
    `bincount` over those columns replaces its per-element `add.at`, which cost more than
    everything else in ranking at 100,000 passages. Unknown terms and repeats count as bm25s
    counts them (the Lucene variant: a passage without a term gains nothing from it).
    """
    lexical = index.lexical
    total = len(index.passages)
    ids = [lexical.vocab_dict[t] for t in tokens if t in lexical.vocab_dict]
    if not ids:  # no known term ("hi", emoji only)
        return np.zeros(total, dtype=np.float32)
    indptr, postings = lexical.scores["indptr"], lexical.scores["indices"]
    spans = [slice(indptr[i], indptr[i + 1]) for i in ids]
    rows = np.concatenate([postings[span] for span in spans])
    weights = np.concatenate([lexical.scores["data"][span] for span in spans])
    return np.bincount(rows, weights, minlength=total).astype(np.float32)


def in_area(index: SearchIndex, area: Area) -> np.ndarray:
    """Which rows are the area's passages, from the index's rows by area: a question asked
    within an area must not cost a pass over every passage of a large corpus."""
    mask = np.zeros(len(index.passages), dtype=bool)
    mask[index.rows_in(area.slug)] = True
    return mask


def _top_rows(scores: np.ndarray, rows: np.ndarray) -> list[int]:
    """Up to CANDIDATES of `rows`, best score first (ties by row for a stable order)."""
    if len(rows) > CANDIDATES:
        rows = rows[np.argpartition(-scores[rows], CANDIDATES - 1)[:CANDIDATES]]
    return rows[np.lexsort((rows, -scores[rows]))].tolist()


@dataclass(frozen=True)
class _State:
    corpus: Corpus
    index: SearchIndex
    translated: SearchIndex | None = None  # the multilingual model's index of the same passages
    scope: ScopeModel | None = None  # trained on the corpus's scope examples; None without any
    about_ip: np.ndarray = field(  # per scope example: about IP (not a look-alike)
        default_factory=lambda: np.zeros(0, dtype=bool), compare=False, repr=False
    )
    searches: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    bridges: dict[tuple[str, str], tuple[tuple[str, ...], bool]] = field(
        default_factory=dict, compare=False, repr=False
    )


def _serving(corpus: Corpus, index: SearchIndex, translated: SearchIndex | None) -> _State:
    """What one version answers with: its corpus, indexes and the scope model trained on it."""
    texts, labels = corpus.scope.examples()
    state = _State(corpus, index, translated, about_ip=np.array(labels, dtype=bool))
    if index.scope_vectors is None or not trainable(labels):
        return state
    features = np.stack(
        [
            scope_signals(state, q, expanded_question(state, q), v)
            for q, v in zip(texts, index.scope_vectors, strict=True)
        ]
    )
    return replace(state, scope=ScopeModel.fit(features, labels))


def scope_signals(
    state: _State, question: str, text: str, vector: np.ndarray, dense: np.ndarray | None = None
) -> np.ndarray:
    """What the scope model reads of a question (see `retrieval.scope.scope_features`).

    `text` is the question as searched (`expanded_question`), `vector` its embedding. `dense`
    is the question's similarities where the ranking computed them; without it (a scope
    example) they are computed over every passage, which finds the same best one.
    """
    specific = float(_lexical_scores(state.index, terms_of(text)[1]).max(initial=0.0))
    ip_term = names_ip_term(question, state.corpus.glossary)
    best = float(np.max(dense if dense is not None else state.index.vectors @ vector))
    return scope_features(vector, best, ip_term, specific)


class Retriever:
    """Finds the passages that answer a question, or decides that none do."""

    def __init__(
        self,
        corpus: Corpus,
        index: SearchIndex,
        embedder,
        policy: AbstentionPolicy,
        multilingual: Multilingual | None = None,
    ):
        self.embedder = embedder
        self.policy = policy
        self.multilingual = multilingual
        self._state = _serving(corpus, index, multilingual.index if multilingual else None)
        self.versions: Versions | None = None  # where refreshes build and find versions
        self.problems: tuple[Problem, ...] = ()  # why the corpus on disk is not the one served
        self.unchecked: str | None = None  # a changed corpus on disk awaiting the quality gate

    def swap(
        self, corpus: Corpus, index: SearchIndex, translated: SearchIndex | None = None
    ) -> None:
        """Serve a new corpus from now on; questions in flight finish on the old one.

        Without a multilingual index of the new corpus, other languages take the English path.
        """
        self._state = _serving(corpus, index, translated)

    # --- multilingual hook: which path a question takes (see retrieval/multilingual.py) ---
    def language_of(self, question: str, hint: str | None = None) -> str:
        """'en' for today's English path, else the language the multilingual path answers in."""
        state = self._state
        if self.multilingual is None or state.translated is None:
            return ENGLISH
        vocabulary = state.index.lexical.vocab_dict
        detector = self.multilingual.detector
        return detector.language_of(question, vocabulary, hint, self.embedder.words)

    def language_and_query(self, question: str, hint: str | None = None) -> tuple[str, str]:
        """The language a question is answered in, and the text to embed for it."""
        language = self.language_of(question, hint)
        return language, self.query_text(question, language)

    def query_embedder(self, language: str):
        """The model that embeds a question in this language (MiniLM for English)."""
        if language == ENGLISH or self.multilingual is None:
            return self.embedder
        return self.multilingual.model.queries

    @property
    def state(self) -> _State:
        """The corpus and index in use now; hold on to it to rank consistently during a swap."""
        return self._state

    @property
    def corpus(self) -> Corpus:
        return self._state.corpus

    @property
    def index(self) -> SearchIndex:
        return self._state.index

    def resolve_area(self, text: str) -> Area:
        """An area from its slug, prefix code or title, forgiving case; else a helpful error."""
        areas = self.corpus.areas
        wanted = text.strip().lower()
        for area in areas:
            names = {area.slug, area.title.lower(), area.slug.replace("-", " ")}
            if wanted in names or wanted == _prefix_of(area).lower():
                return area
        starting = [a for a in areas if a.slug.startswith(wanted) and wanted]
        if len(starting) == 1:
            return starting[0]
        by_name = {a.slug: a for a in areas} | {a.title.lower(): a for a in areas}
        # close in spelling, not merely sharing letters ("Bewertung" is not "new-technologies")
        close = difflib.get_close_matches(wanted, list(by_name), n=1, cutoff=0.5)
        raise UnknownAreaError(text, areas, by_name[close[0]] if close else None)

    def prepare(
        self, question: str, area: str | None = None
    ) -> tuple[str, tuple[str, ...], Area | None]:
        """The question cleaned, notes for the user, and the area to search: the checks every
        way in shares before embedding. Raises UserInputError for input a user must correct."""
        text, notes = clean_question(question)
        return text, notes, self.resolve_area(printable(area)) if area else None

    def answer(
        self,
        question: str,
        area: str | None = None,
        top_k: int = 3,
        offset: int = 0,
        mode: Mode = "hybrid",
        language_hint: str | None = None,
    ) -> Answer:
        """Answer one question; raises UserInputError for input a user must correct."""
        text, notes, area_filter = self.prepare(question, area)
        language, query = self.language_and_query(text, language_hint)
        vector = self.query_embedder(language).embed([query])[0]
        return self.answer_with_vector(
            text, vector, area_filter, top_k, offset, mode, notes, language
        )

    def answer_with_vector(
        self,
        question: str,
        vector: np.ndarray,
        area: Area | None,
        top_k: int,
        offset: int = 0,
        mode: Mode = "hybrid",
        notes: tuple[str, ...] = (),
        language: str = ENGLISH,
    ) -> Answer:
        """The ranking half of `answer`, for callers that embed questions in batches.

        `vector` is `query_embedder(language)`'s vector of `query_text(question, language)`:
        another language than English takes the multilingual path when it is on.
        """
        state = self._state
        if language != ENGLISH and state.translated is not None and self.multilingual:
            return self._answer_translated(
                state, question, vector, area, (top_k, offset), notes, language
            )
        if known_word_share(question, state.index.lexical.vocab_dict) < MIN_KNOWN_WORDS:
            notes = (*notes, ENGLISH_NOTE)
        ranking = self.rank(state, question, vector, area, mode)
        if not ranking.rows or self._abstains(ranking, area):
            if area is None and mode == "hybrid" and self._not_about_ip(ranking):
                return Answer(question, False, None, notes=notes, about_ip=False)  # no areas
            suggestions = self._closest_areas(state.corpus, state.index, ranking.dense)
            return Answer(question, False, area, suggestions=suggestions, notes=notes)
        best_area = area or state.corpus.area(state.index.passages[ranking.rows[0]].area)
        rows = without_restatements(state.index, ranking.rows, offset + top_k + 1)
        window = rows[offset : offset + top_k]
        terms = set(terms_of(expanded_question(state, question))[1])
        hits = tuple(
            Hit(
                state.index.passages[row],
                ranking.score(row),
                answering_sentence(state.index, row, vector, terms),
                state.corpus.area(state.index.passages[row].area),
            )
            for row in window
        )
        has_more = len(rows) > offset + top_k
        return Answer(
            question, True, best_area, hits, notes=notes, offset=offset, has_more=has_more
        )

    def _answer_translated(
        self,
        state: _State,
        question: str,
        vector: np.ndarray,
        area: Area | None,
        window: tuple[int, int],
        notes: tuple[str, ...],
        language: str,
    ) -> Answer:
        """The multilingual path: the model's ranking fused with BM25 over the English terms
        the glossary recognises, and this path's own abstention."""
        assert state.translated is not None and self.multilingual is not None
        index, ml = state.translated, self.multilingual
        allowed = None if area is None else in_area(index, area)
        terms, ip_term = bridge_terms(state, question, language)
        lexical = _lexical_scores(state.index, tokenize(" ".join(terms)))
        eligible = lexical > 0 if allowed is None else (lexical > 0) & allowed
        by_lexical = _top_rows(lexical, np.flatnonzero(eligible))
        ranking = rank_dense(index, vector, allowed, also=np.array(by_lexical, dtype=np.int64))
        ip_term = ip_term or area is not None  # a chosen area says the topic is IP
        confidence = translated_confidence(state, ranking, vector)
        if abstains_translated(confidence, ip_term, ml.min_score, ml.confident_score):
            suggestions = self._closest_areas(state.corpus, index, ranking.scores)
            return Answer(question, False, area, (), suggestions, notes, language=language)
        notes = (*notes, passages_note(language))  # said only where there are passages
        fused = _elsewhere_discounted(index, _bridged(ranking, lexical, by_lexical), question)
        top_k, offset = window
        rows = best_first(fused)
        best_area = area or state.corpus.area(index.passages[rows[0]].area)
        hits = tuple(
            Hit(
                index.passages[r],
                fused[r] / fused[rows[0]],
                nearest_sentence(index, r, vector),
                state.corpus.area(index.passages[r].area),
            )
            for r in rows[offset : offset + top_k]
        )
        has_more = len(rows) > offset + top_k
        return Answer(question, True, best_area, hits, (), notes, offset, has_more, language)

    def _not_about_ip(self, ranking: Ranking) -> bool:
        """A decline to tell as "this does not look like an IP question": out of scope, and
        not close in meaning to any passage. A real question worded without an IP word ("what
        should I sign before sending samples to another lab") is out of scope for the scope
        model yet close to a passage: telling its asker it is not about IP would mislead, so
        it gets the decline that offers the closest areas."""
        if ranking.in_scope >= self.policy.min_in_scope:
            return False
        return abstention_signals(ranking).best < NOT_ABOUT_IP_BELOW

    def search_text(self, question: str) -> str:
        """The question as it is searched: its own words, then glossary meanings of its terms.

        Callers that embed questions themselves embed this text, so that the vector and the
        BM25 query in `answer_with_vector` see the same words.
        """
        return expanded_question(self._state, question)

    def query_text(self, question: str, language: str) -> str:
        """What to embed for a question: English is searched with its glossary meanings, other
        languages with the English terms the glossary's translations recognise in them (the
        multilingual model reads both, and the English words are the corpus's own)."""
        if language == ENGLISH:
            return self.search_text(question)
        terms, _ = bridge_terms(self._state, question, language)
        return f"{question} ({'; '.join(terms)})" if terms else question

    def rank(
        self, state: _State, question: str, vector: np.ndarray, area: Area | None, mode: Mode
    ) -> Ranking:
        """Order the best candidates of each ranker (of the area, if one is given).

        Only the top `CANDIDATES` of the dense and of the lexical ranking are fused: a passage
        that neither ranker puts near the top cannot win the fusion, so sorting every row is
        wasted work on a large corpus.
        """
        text = expanded_question(state, question)
        dense, candidates = _dense_scores(state.index, vector, area)
        lexical = _lexical_scores(state.index, terms_of(text)[0])
        if area is not None:
            lexical[~in_area(state.index, area)] = 0.0
        by_dense = _top_rows(dense, candidates)
        by_lexical = _top_rows(lexical, np.flatnonzero(lexical > 0))
        features = scope_signals(state, question, text, vector, dense)
        in_scope = state.scope.probability(features) if state.scope is not None else 1.0
        if mode != "hybrid":
            scores = _rank_scores(by_dense if mode == "dense" else by_lexical)
        else:
            scores = fuse_scores([by_dense, by_lexical], k=HYBRID_RRF_K)
        scores = _elsewhere_discounted(state.index, scores, question)
        return Ranking(best_first(scores), dense, lexical, mode, scores, in_scope)

    def _abstains(self, ranking: Ranking, area: Area | None) -> bool:
        """Whether to say "not covered"; a user who chose an area has said the topic is IP."""
        signals = abstention_signals(ranking)
        if area is not None:
            signals = replace(signals, in_scope=1.0)
        return self.policy.abstains(ranking.mode, signals)

    def _closest_areas(
        self, corpus: Corpus, index: SearchIndex, dense: np.ndarray, count: int = 2
    ) -> tuple[Area, ...]:
        """The areas of the nearest passages, offered as "did you mean" when abstaining.

        Only the nearest `CANDIDATES` are sorted: they hold the nearest areas, and sorting
        every passage of a large corpus is what made abstaining slow.
        """
        nearest = np.arange(len(dense))
        if len(dense) > CANDIDATES:
            nearest = np.argpartition(-dense, CANDIDATES)[:CANDIDATES]
        order = nearest[np.argsort(-dense[nearest], kind="stable")]
        slugs: list[str] = []
        for row in order:
            slug = index.passages[int(row)].area
            if slug not in slugs:
                slugs.append(slug)
            if len(slugs) == count:
                break
        return tuple(corpus.area(s) for s in slugs)


def expanded_question(state: _State, question: str) -> str:
    """The question as searched in this version (see `retrieval.index.search_text`).

    Kept for the last few thousand questions: one question is read for its language, embedded,
    ranked, weighed for scope and highlighted, and each of those needs it.
    """
    vocabulary = state.index.lexical.vocab_dict
    return _kept(
        state.searches, question, lambda: search_text(state.corpus.glossary, vocabulary, question)
    )


def _kept(cache: dict[Key, Value], key: Key, compute: Callable[[], Value]) -> Value:
    """`cache[key]`, computed on first use; a cache of `SEARCHES_KEPT` entries starts afresh."""
    value = cache.get(key)
    if value is None:
        value = compute()
        if len(cache) >= SEARCHES_KEPT:
            cache.clear()
        cache[key] = value
    return value


@functools.lru_cache(maxsize=SEARCHES_KEPT)
def terms_of(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A searched text's BM25 terms, and those that are specific (not generic academic words);
    kept, like the text: ranking, scope and highlighting each read them."""
    return tuple(tokenize(text)), tuple(specific_terms(text))


def bridge_terms(state: _State, question: str, language: str) -> tuple[tuple[str, ...], bool]:
    """The English terms a question in another language names (the glossary's translations it
    uses and the meanings of its acronyms: FTO, NDA, PCT), and whether they name an IP concept
    (abstention). Kept like the searched text: the text to embed and the ranking both read them."""
    return _kept(state.bridges, (language, question), lambda: _bridge(state, question, language))


def _bridge(state: _State, question: str, language: str) -> tuple[tuple[str, ...], bool]:
    glossary = state.corpus.glossary
    # acronyms as the glossary writes them: Dutch "een" is no EEN, French "ca" no CA
    typed = [e for e in glossary.matches(question) if e.term in question]
    acronyms = [m for entry in typed for m in entry.meanings]
    terms = tuple(dict.fromkeys([*glossary.english_terms(question, language), *acronyms]))
    return terms, names_ip_concept(terms)


def translated_confidence(state: _State, ranking: DenseRanking, vector: np.ndarray) -> float:
    """What the multilingual abstention weighs: the best passage's similarity plus how much
    nearer the question is to the scope examples about IP than to the look-alikes."""
    assert state.translated is not None
    return ranking.best + scope_margin(state.translated, state.about_ip, vector)


def _bridged(ranking: DenseRanking, lexical: np.ndarray, by_lexical: list[int]) -> dict[int, float]:
    """The model's top candidates and BM25's over the bridged English terms, each scored by its
    model similarity plus `BRIDGE_WEIGHT` per point of BM25.

    Both rank the same passages (the two indexes hold them in the same rows); BM25 sees only
    the terms, never the foreign words, which match English by accident. Adding scores keeps how
    far apart the model puts two passages, which reciprocal-rank fusion throws away: a model
    that is sure overrules one matched term, and a close call goes to the passage with the terms.
    """
    rows = dict.fromkeys([*(int(r) for r in ranking.rows[:CANDIDATES]), *by_lexical])
    return {row: float(ranking.scores[row]) + BRIDGE_WEIGHT * float(lexical[row]) for row in rows}


def _elsewhere_discounted(
    index: SearchIndex, scores: dict[int, float], question: str
) -> dict[int, float]:
    """`scores` with those of passages that hold in one country only (`Passage.country`),
    a country the question does not name, multiplied by `ELSEWHERE_FACTOR`.

    German employee-invention law is no answer to a Swedish professor, nor to a question that
    names no country: it shares the words of every question about who owns an invention.
    """
    for row in index.country_rows:  # a few rows, where `scores` holds a hundred or more
        if row in scores and not names_country(question, index.passages[row]):
            scores[row] *= ELSEWHERE_FACTOR
    return scores


def without_restatements(index: SearchIndex, rows: Sequence[int], needed: int) -> list[int]:
    """The first `needed` rows, skipping any that restates a better one from the same source.

    Two passages of one document that embed almost alike make the user read one point
    twice; different sources saying the same thing corroborate each other and both stay.
    """
    kept: list[int] = []
    for row in rows:
        if len(kept) == needed:
            break
        source = source_key(index.passages[row])
        if not any(
            source_key(index.passages[k]) == source
            and float(index.vectors[k] @ index.vectors[row]) >= RESTATEMENT_COSINE
            for k in kept
        ):
            kept.append(row)
    return kept


def source_key(passage: Passage) -> str:
    """The cited document: an EU act's number when the citation names one, else the URL."""
    return _source_key(passage.citation, passage.url)


@functools.lru_cache(maxsize=SEARCHES_KEPT)
def _source_key(citation: str, url: str) -> str:
    """Kept: every answer compares the sources of its first passages."""
    act = _EU_ACT.search(citation)
    return act.group(0) if act else url.split("#", 1)[0].rstrip("/")


def abstention_signals(ranking: Ranking) -> Signals:
    """Best dense similarity, best BM25 score and the scope model's probability."""
    if not ranking.rows:
        return Signals(0.0, 0.0, ranking.in_scope)
    best = float(np.max(ranking.dense[ranking.rows]))
    lexical = float(np.max(ranking.lexical[ranking.rows]))
    return Signals(best, lexical, ranking.in_scope)


def _prefix_of(area: Area) -> str:
    return AREA_PREFIXES[area.slug]


def printable(text: str) -> str:
    """Without control characters and lone UTF-16 surrogates, which no tokenizer or chat
    platform accepts (a surrogate cannot even be encoded as UTF-8); each becomes a space."""
    if text.isprintable():
        return text
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c for c in text)


def clean_question(question: str) -> tuple[str, tuple[str, ...]]:
    """Make text safe to embed and to echo, normalise whitespace and cap the length.

    An empty question is the user's to fix.
    """
    text = " ".join(printable(question or "").split())
    if not text:
        raise EmptyQuestionError()
    if len(text) > MAX_QUESTION_CHARS:
        cut = text[:MAX_QUESTION_CHARS].rsplit(" ", 1)[0] or text[:MAX_QUESTION_CHARS]
        note = (
            f"Your question was long, so I answered its first {MAX_QUESTION_CHARS:,} characters. "
            "Ask one thing at a time for the best results."
        )
        return cut, (note,)
    return text, ()


def open_retriever(
    corpus_dir: Path,
    data_dir: Path,
    model: str,
    index_type: str = "flat",
    policy: AbstentionPolicy | None = None,
    progress: Progress = lambda _msg: None,
    multilingual: bool = True,
    int8: bool = True,
    gated: bool = False,
) -> Retriever:
    """Load the model(s) and the corpus, and bring the index(es) up to date: ready to answer.

    If the corpus on disk is invalid but a good version is on disk, that version is served and
    the problems are kept in `retriever.problems` (moderators see them in /about). `gated`: a
    changed corpus waits for the refresh worker's quality gate (`retriever.unchecked`).
    """
    check_corpus_folder(corpus_dir)
    progress(f"Loading the embedding model ({model})...")
    embedder = Embedder(model, cache_dir=Path(data_dir) / "models", int8=int8)
    model_for_others = None
    if multilingual:  # multilingual hook: a second model and index for other languages
        try:
            progress(f"Loading the multilingual model ({MULTILINGUAL_MODEL})...")
            model_for_others = MultilingualModel()
        except MultilingualUnavailableError as exc:
            log.warning("%s; questions in other languages take the English path", exc)
            progress(f"Warning: {exc}; answering in English only.")
    versions = Versions(Path(data_dir), index_type, embedder, model_for_others)
    served = serve_or_fall_back(versions, Path(corpus_dir), progress, gated)
    build = served.build
    other_languages = None
    if model_for_others is not None and build.translated is not None:
        other_languages = Multilingual(LanguageDetector(), model_for_others, build.translated)
    retriever = Retriever(
        build.corpus, build.index, embedder, policy or AbstentionPolicy(), other_languages
    )
    retriever.versions, retriever.problems = versions, served.problems
    retriever.unchecked = served.unchecked
    return retriever


def check_corpus_folder(corpus_dir: Path) -> None:
    """Fail at once, before loading models, when there is no corpus folder at all."""
    if not Path(corpus_dir).is_dir():
        raise CorpusError([Problem(str(corpus_dir), 0, "corpus folder not found")])
