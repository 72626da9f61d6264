"""Retrieval quality on a labelled question set: BM25, dense and hybrid side by side.

Recall counts end to end: a real question that is wrongly abstained on is a miss, because the
user saw no answer. `calibrate` cross-validates the scope model's settings that keep wrong
abstentions rare while catching look-alikes; the chosen values become the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from retrieval.abstention import AbstentionPolicy, Mode, Signals
from retrieval.multilingual import rank_dense
from retrieval.scope import BEST_FEATURE, EvalQuestion, EvalSet, ScopeModel, parse_eval_set
from retrieval.search import (
    MODES,
    Answer,
    Retriever,
    abstention_signals,
    bridge_terms,
    scope_signals,
    translated_confidence,
    without_restatements,
)

DEFAULT_EVAL_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval.yaml"
KS = (1, 3, 5)


@dataclass(frozen=True)
class Observation:
    """What one mode did with one question, before any abstention policy is applied."""

    first_hit: int | None  # rank (0-based) of the first expected passage
    top_area: str | None
    signals: Signals
    labelled: bool = True  # the question names its expected passages (recall is measured)


@dataclass
class ModeReport:
    mode: Mode
    recall: dict[int, float] = field(default_factory=dict)
    mrr: float = 0.0
    area_accuracy: float = 0.0
    abstention_precision: float = 0.0
    abstention_recall: float = 0.0
    near_domain_abstention: float = 0.0
    false_abstention: float = 0.0


@dataclass
class Report:
    modes: list[ModeReport]
    questions: int
    off_topic: int
    near_domain: int
    policy: AbstentionPolicy
    trials: list[ScopeTrial] = field(default_factory=list)  # with `calibrate`
    misses: list[str] = field(default_factory=list)


def load_eval_set(path: Path) -> EvalSet:
    """A labelled question set (see `retrieval.scope.parse_eval_set`); raises ValueError."""
    data, problems = parse_eval_set(Path(path).read_text(encoding="utf-8"))
    if problems:
        line, message = problems[0]
        raise ValueError(f"{path}:{line}: {message}")
    return data


def observe(
    retriever: Retriever, questions: list[str], expected: list[tuple[str, ...]], mode: Mode
):
    """Rank every question once; metrics for any policy are derived from these observations."""
    vectors = retriever.embedder.embed([retriever.search_text(q) for q in questions])
    state = retriever.state
    observations = []
    for question, vector, wanted in zip(questions, vectors, expected, strict=True):
        ranking = retriever.rank(state, question, vector, None, mode)
        shown = without_restatements(state.index, ranking.rows, max(KS))
        ids = [state.index.passages[row].id for row in shown]
        first = next((rank for rank, pid in enumerate(ids) if pid in wanted), None)
        top_area = state.index.passages[ranking.rows[0]].area if ranking.rows else None
        signals = abstention_signals(ranking)
        observations.append(Observation(first, top_area, signals, bool(wanted)))
    return observations


def score_mode(
    mode: Mode,
    real: list[Observation],
    areas: list[str],
    off: list[Observation],
    policy: AbstentionPolicy,
    near: list[Observation] | None = None,
) -> ModeReport:
    """Metrics of one mode under one policy; `off` includes the near-domain questions `near`."""

    def abstains(o: Observation) -> bool:
        return policy.abstains(mode, o.signals)

    answered = [not abstains(o) for o in real]
    report = ModeReport(mode)
    n = max(1, len(real))
    labelled = [(o, a) for o, a in zip(real, answered, strict=True) if o.labelled]
    n_labelled = max(1, len(labelled))
    for k in KS:
        report.recall[k] = (
            sum(a and o.first_hit is not None and o.first_hit < k for o, a in labelled) / n_labelled
        )
    report.mrr = (
        sum(1 / (o.first_hit + 1) for o, a in labelled if a and o.first_hit is not None)
        / n_labelled
    )
    with_area = [(o, area) for o, area in zip(real, areas, strict=True) if area]
    report.area_accuracy = sum(o.top_area == area for o, area in with_area) / max(1, len(with_area))
    true_abstain = sum(abstains(o) for o in off)
    false_abstain = answered.count(False)
    report.abstention_recall = true_abstain / max(1, len(off))
    report.abstention_precision = true_abstain / max(1, true_abstain + false_abstain)
    report.false_abstention = false_abstain / n
    report.near_domain_abstention = sum(abstains(o) for o in near or []) / max(1, len(near or []))
    return report


def evaluate(retriever: Retriever, path: Path, calibrate: bool = False) -> Report:
    data = load_eval_set(path)
    texts = [q.question for q in data.questions]
    wanted = [q.expected for q in data.questions]
    areas = [q.area for q in data.questions]
    policy = retriever.policy
    reports, trials, misses = [], [], []
    for mode in MODES:
        real = observe(retriever, texts, wanted, mode)
        easy = observe(retriever, list(data.off_topic), [()] * len(data.off_topic), mode)
        near = observe(retriever, list(data.near_domain), [()] * len(data.near_domain), mode)
        reports.append(score_mode(mode, real, areas, easy + near, policy, near))
        if mode == "hybrid":
            if calibrate:
                trials = cross_validate_scope(retriever, data)
            misses = [
                f"{q.question!r} expected {q.expected[0]}"
                for q, o in zip(data.questions, real, strict=True)
                if o.labelled and (o.first_hit is None or o.first_hit >= 3)
            ]
    return Report(
        reports, len(texts), len(data.off_topic), len(data.near_domain), policy, trials, misses
    )


GATE = {  # the quality gate's figures: name → (what it says, whether higher is better)
    "recall_at_3": ("right passage in the top 3", True),
    "wrongly_abstained": ("real questions left unanswered", False),
    "off_topic_declined": ("off-topic questions declined", True),
}


def gate_figures(retriever: Retriever, path: Path) -> dict[str, float]:
    """The numbers a refresh must not make worse: hybrid mode, the live policy, one pass."""
    data = load_eval_set(path)
    real = observe(
        retriever,
        [q.question for q in data.questions],
        [q.expected for q in data.questions],
        "hybrid",
    )
    off_topic = [*data.off_topic, *data.near_domain]
    off = observe(retriever, off_topic, [()] * len(off_topic), "hybrid")
    report = score_mode("hybrid", real, [q.area for q in data.questions], off, retriever.policy)
    return {
        "recall_at_3": report.recall[3],
        "wrongly_abstained": report.false_abstention,
        "off_topic_declined": report.abstention_recall,
        "questions": float(len(real) + len(off)),
    }


def regressions(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """What got worse from `before` to `after`, in words; empty when nothing did."""
    worse = []
    for name, (label, higher_is_better) in GATE.items():
        change = after[name] - before[name]
        if (change < -1e-9) if higher_is_better else (change > 1e-9):
            worse.append(f"{label}: {before[name]:.1%} → {after[name]:.1%}")
    return worse


@dataclass(frozen=True)
class ScopeTrial:
    """Cross-validated abstention of one scope-model setting on the pooled tuning questions."""

    regularisation: float
    min_in_scope: float
    near_domain: float  # share of near-domain look-alikes abstained
    wrongly: float  # share of real questions abstained


REGULARISATIONS = (0.01, 0.03, 0.1, 0.3, 1.0)
MOST_WRONG_IN_CV = 0.015  # a third of the 5% allowed: unseen questions are farther than a fold
CLOSE_ENOUGH = 0.005  # near-domain shares this close to the best are a tie: prefer the simpler


def cross_validate_scope(
    retriever: Retriever, data: EvalSet, folds: int = 5, seeds: int = 3
) -> list[ScopeTrial]:
    """Train the scope model on four fifths of the corpus's scope examples and `data` together,
    measure it on the rest, for each regularisation and threshold (`seeds` shuffles)."""
    texts, labels = data.examples()
    scope_texts, scope_labels = retriever.corpus.scope.examples()
    texts, labels = texts + scope_texts, np.concatenate([labels, scope_labels])
    near = set(data.near_domain) | set(retriever.corpus.scope.near_domain)
    is_near = np.array([t in near for t in texts])
    searched = [retriever.search_text(q) for q in texts]
    vectors = retriever.embedder.embed(searched)
    state = retriever.state
    x = np.stack(
        [scope_signals(state, q, t, v) for q, t, v in zip(texts, searched, vectors, strict=True)]
    )
    too_far = x[:, BEST_FEATURE] < retriever.policy.min_score
    trials = []
    for regularisation in REGULARISATIONS:
        runs = [_out_of_fold(x, labels, regularisation, folds, seed) for seed in range(seeds)]
        for threshold in np.round(np.arange(0.2, 0.71, 0.05), 2):
            abstained = [(p < threshold) | too_far for p in runs]
            trials.append(
                ScopeTrial(
                    regularisation,
                    float(threshold),
                    float(np.mean([a[is_near].mean() for a in abstained])),
                    float(np.mean([a[labels == 1].mean() for a in abstained])),
                )
            )
    return trials


def _out_of_fold(x: np.ndarray, labels: np.ndarray, regularisation: float, folds: int, seed: int):
    """Each question's probability from a model trained without its fold."""
    order = np.random.default_rng(seed).permutation(len(labels))
    probabilities = np.zeros(len(labels))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        model = ScopeModel.fit(x[train], labels[train], regularisation)
        probabilities[fold] = [model.probability(row) for row in x[fold]]
    return probabilities


def choose_scope_setting(trials: list[ScopeTrial]) -> ScopeTrial | None:
    """The setting that abstains on the most look-alikes within `MOST_WRONG_IN_CV`; of
    settings about as good, the most regularised one (the smoothest model)."""
    feasible = [t for t in trials if t.wrongly <= MOST_WRONG_IN_CV + 1e-9]
    if not feasible:
        return None
    top = max(t.near_domain for t in feasible)
    close = [t for t in feasible if t.near_domain >= top - CLOSE_ENOUGH]
    return max(close, key=lambda t: (t.regularisation, t.near_domain, -t.wrongly))


def _trial(t: ScopeTrial) -> str:
    return (
        f"regularisation {t.regularisation:<5} min_in_scope {t.min_in_scope:.2f}: "
        f"near-domain abstained {t.near_domain:.3f}, wrongly abstained {t.wrongly:.3f}"
    )


def format_report(report: Report) -> str:
    header = f"{'':<22}" + "".join(f"{r.mode:>10}" for r in report.modes)
    rows = [header]

    def row(label: str, values: list[float]) -> None:
        rows.append(f"{label:<22}" + "".join(f"{v:>10.3f}" for v in values))

    for k in KS:
        row(f"recall@{k}", [r.recall[k] for r in report.modes])
    row("MRR", [r.mrr for r in report.modes])
    row("area accuracy", [r.area_accuracy for r in report.modes])
    row("abstention precision", [r.abstention_precision for r in report.modes])
    row("abstention recall", [r.abstention_recall for r in report.modes])
    row("  near-domain", [r.near_domain_abstention for r in report.modes])
    row("wrongly abstained", [r.false_abstention for r in report.modes])
    lines = [
        f"{report.questions} questions, {report.off_topic} off-topic, "
        f"{report.near_domain} near-domain off-topic",
        *rows,
    ]
    p = report.policy
    lines.append(
        f"policy: min_score={p.min_score} min_in_scope={p.min_in_scope} "
        f"(lexical-only: min_bm25={p.min_bm25})"
    )
    if report.trials:
        lines.append("scope model, 5-fold cross-validation on this set and corpus/scope.yaml:")
        for r in sorted({t.regularisation for t in report.trials}):
            best = choose_scope_setting([t for t in report.trials if t.regularisation == r])
            if best:
                lines.append(f"  {_trial(best)}")
        chosen = choose_scope_setting(report.trials)
        if chosen:
            lines.append(
                f"calibrated: IPBOT_ABSTAIN_MIN_IN_SCOPE={chosen.min_in_scope} "
                f"(scope.REGULARISATION={chosen.regularisation})"
            )
    if report.misses:
        lines.append(f"hybrid misses at 3 ({len(report.misses)}):")
        lines += [f"  {m}" for m in report.misses]
    return "\n".join(lines)


TRANSLATED_EVAL_FILE = DEFAULT_EVAL_FILE.parent / "eval_translated.yaml"


@dataclass(frozen=True)
class LanguageReport:
    """The whole path for one language: detection, ranking and abstention, end to end."""

    language: str
    questions: int
    routed: float  # share of its real questions that took the multilingual path
    recall: dict[int, float]
    false_abstention: float
    abstention_recall: float
    # per real and per off-topic question: the best multilingual score, whether it names an
    # IP concept the glossary recognises (the abstention signals, whatever the thresholds)
    best_scores: tuple[tuple[float, bool], ...]
    off_topic_best: tuple[tuple[float, bool], ...]


def load_translated_sets(path: Path) -> dict[str, EvalSet]:
    """One eval set per language from a file of questions with one key per language."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not all(isinstance(language, str) for language in data.get("languages", [])):
        # YAML reads a bare `no` (Norwegian) as false: the set would be measured as language 0
        raise ValueError(f'{path}: write every language code as a string, e.g. "no"')
    return {
        language: EvalSet(
            tuple(
                EvalQuestion(str(item[language]), str(item["area"]), tuple(item["expected"]))
                for item in data.get("questions", [])
            ),
            tuple(str(item[language]) for item in data.get("off_topic", [])),
        )
        for language in data.get("languages", [])
    }


def _answers(
    retriever: Retriever, texts: list[str]
) -> tuple[list[Answer], list[tuple[float, bool]], float]:
    """Answers as users get them (each question through its detected path), the multilingual
    abstention signals of each whatever the thresholds (for calibration), and the share of
    questions the multilingual path took."""
    multilingual, translated = retriever.multilingual, retriever.state.translated
    if multilingual is None or translated is None:
        raise ValueError("the multilingual path is off")
    languages = [retriever.language_of(t) for t in texts]
    other = multilingual.model.queries.embed(
        [retriever.query_text(t, lang) for t, lang in zip(texts, languages, strict=True)]
    )
    english_rows = [i for i, lang in enumerate(languages) if lang == "en"]
    english = retriever.embedder.embed([retriever.search_text(texts[i]) for i in english_rows])
    vectors = list(other)
    for i, vector in zip(english_rows, english, strict=True):
        vectors[i] = vector
    answers = [
        retriever.answer_with_vector(t, v, None, max(KS), language=lang)
        for t, v, lang in zip(texts, vectors, languages, strict=True)
    ]
    state = retriever.state
    signals = [
        (
            translated_confidence(state, rank_dense(translated, v), v),
            bridge_terms(state, t, lang)[1],
        )
        for t, v, lang in zip(texts, other, languages, strict=True)
    ]
    return answers, signals, 1 - len(english_rows) / max(1, len(texts))


def evaluate_language(retriever: Retriever, language: str, data: EvalSet) -> LanguageReport:
    real, real_best, real_routed = _answers(retriever, [q.question for q in data.questions])
    off, off_best, off_routed = _answers(retriever, list(data.off_topic))
    n = max(1, len(real))
    recall = {
        k: sum(
            a.answered and any(h.passage.id in q.expected for h in a.hits[:k])
            for a, q in zip(real, data.questions, strict=True)
        )
        / n
        for k in KS
    }
    return LanguageReport(
        language,
        len(real),
        real_routed,
        recall,
        sum(not a.answered for a in real) / n,
        sum(not a.answered for a in off) / max(1, len(off)),
        tuple(real_best),
        tuple(off_best),
    )


def evaluate_languages(retriever: Retriever, *paths: Path) -> list[LanguageReport]:
    """One report per language of each file (a language in two files is reported twice)."""
    return [
        evaluate_language(retriever, language, data)
        for path in paths
        for language, data in load_translated_sets(path).items()
    ]


def calibrate_translated(
    reports: list[LanguageReport], most_wrong: float = 0.03, most_wrong_each: float = 0.05
) -> tuple[float, float]:
    """The multilingual thresholds (min_score, confident_score) that turn away the most
    off-topic questions while wrongly abstaining on at most `most_wrong` of the real ones over
    all languages together and `most_wrong_each` in any one (the model places some languages
    lower than others: a pooled bound alone spends one language's answers on the others'
    look-alikes); of equally good pairs the middle one, with room on both sides."""
    real = tuple(s for r in reports for s in r.best_scores)
    off = tuple(s for r in reports for s in r.off_topic_best)
    if not real:
        return 0.0, 0.0
    steps = np.round(np.arange(0.70, 0.90, 0.0025), 4)
    pairs = [(float(lo), float(hi)) for lo in steps for hi in steps if hi >= lo]

    def abstained(scores: tuple[tuple[float, bool], ...], lo: float, hi: float) -> float:
        return sum(b < lo or (not ip and b < hi) for b, ip in scores) / max(1, len(scores))

    def allowed(lo: float, hi: float) -> bool:
        each = max(abstained(r.best_scores, lo, hi) for r in reports)
        return abstained(real, lo, hi) <= most_wrong and each <= most_wrong_each

    feasible = [(abstained(off, lo, hi), lo, hi) for lo, hi in pairs if allowed(lo, hi)]
    if not feasible:
        return float(steps[0]), float(steps[0])
    top = max(caught for caught, _, _ in feasible)
    best = [(lo, hi) for caught, lo, hi in feasible if caught == top]
    return best[len(best) // 2]


def format_language_reports(
    reports: list[LanguageReport], thresholds: tuple[float, float] | None
) -> str:
    lines = [
        f"{'language':<10}{'questions':>10}{'routed':>8}"
        + "".join(f"{f'recall@{k}':>10}" for k in KS)
        + f"{'wrongly abstained':>19}{'off-topic abstained':>21}"
    ]
    for r in reports:
        lines.append(
            f"{r.language:<10}{r.questions:>10}{r.routed:>8.2f}"
            + "".join(f"{r.recall[k]:>10.3f}" for k in KS)
            + f"{r.false_abstention:>19.3f}{r.abstention_recall:>21.3f}"
        )
    if thresholds is not None:
        lines.append(
            f"calibrated multilingual thresholds: min_score={thresholds[0]} "
            f"confident_score={thresholds[1]}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class HighlightReport:
    """How often the highlighted sentence is one a reader judged to answer the question."""

    judged: int  # passages shown (top 3) for which a reader marked answering sentences
    right: int
    misses: tuple[tuple[str, str, str], ...]  # question, passage id, the sentence highlighted

    @property
    def accuracy(self) -> float:
        return self.right / self.judged if self.judged else 0.0


def highlight_accuracy(
    retriever: Retriever, path: Path, translated: Path | None = None
) -> HighlightReport:
    """Score highlights against sentences marked by reading (see tests/data/*highlights.yaml).

    Only passages that appear in the answer and that the reader found an answering sentence
    in are judged, so ranking changes move the count but not the measure. With `translated`
    (a file of translations keyed by language, with the English question under `en`), each
    marked question is asked in every language of that file instead: the passages and their
    marked sentences are English whatever the language of the question.
    """
    marks = {
        item["q"]: item["answering"]
        for item in yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    }
    asked = [(question, question) for question in marks]
    if translated is not None:
        data = yaml.safe_load(Path(translated).read_text(encoding="utf-8")) or {}
        asked = [
            (item["en"], str(item[language]))
            for item in data.get("questions", [])
            if item["en"] in marks
            for language in data.get("languages", [])
        ]
    judged, misses = 0, []
    for english, text in asked:
        for hit in retriever.answer(text).hits:
            good = marks[english].get(hit.passage.id)
            if not good:
                continue
            judged += 1
            if hit.highlight not in good:
                misses.append((text, hit.passage.id, hit.highlight))
    return HighlightReport(judged, judged - len(misses), tuple(misses))
