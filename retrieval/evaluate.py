"""Retrieval quality on a labelled question set: BM25, dense and hybrid side by side.

Recall counts end to end: a real question that is wrongly abstained on is a miss, because the
user saw no answer. `calibrate` searches the abstention thresholds that keep wrong abstentions
rare while catching off-topic questions; the chosen values become the policy defaults.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from retrieval.abstention import AbstentionPolicy, Mode, Signals
from retrieval.search import MODES, Retriever, abstention_signals, without_restatements

DEFAULT_EVAL_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval.yaml"
KS = (1, 3, 5)


@dataclass(frozen=True)
class EvalQuestion:
    question: str
    area: str
    expected: tuple[str, ...]


@dataclass(frozen=True)
class EvalSet:
    questions: tuple[EvalQuestion, ...]
    off_topic: tuple[str, ...]
    near_domain: tuple[str, ...] = ()  # off-topic questions of academic life: the hard ones


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
    calibrated: AbstentionPolicy | None = None
    misses: list[str] = field(default_factory=list)


def load_eval_set(path: Path) -> EvalSet:
    """Questions with their area and expected passages; a set written without seeing the
    corpus may give only the question text, which then counts for abstention alone."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    questions = tuple(_eval_question(item) for item in data.get("questions", []))
    return EvalSet(
        questions,
        tuple(str(q) for q in data.get("off_topic", [])),
        tuple(str(q) for q in data.get("near_domain") or []),
    )


def _eval_question(item: object) -> EvalQuestion:
    if not isinstance(item, dict):
        return EvalQuestion(str(item), "", ())
    text = item.get("q", item.get("question", ""))
    return EvalQuestion(str(text), str(item.get("area") or ""), tuple(item.get("expected") or ()))


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
    reports, calibrated, misses = [], None, []
    for mode in MODES:
        real = observe(retriever, texts, wanted, mode)
        easy = observe(retriever, list(data.off_topic), [()] * len(data.off_topic), mode)
        near = observe(retriever, list(data.near_domain), [()] * len(data.near_domain), mode)
        reports.append(score_mode(mode, real, areas, easy + near, policy, near))
        if mode == "hybrid":
            if calibrate:
                calibrated = calibrate_policy(real, areas, easy + near, policy)
            misses = [
                f"{q.question!r} expected {q.expected[0]}"
                for q, o in zip(data.questions, real, strict=True)
                if o.labelled and (o.first_hit is None or o.first_hit >= 3)
            ]
    return Report(
        reports, len(texts), len(data.off_topic), len(data.near_domain), policy, calibrated, misses
    )


def calibrate_policy(
    real: list[Observation], areas: list[str], off: list[Observation], base: AbstentionPolicy
) -> AbstentionPolicy:
    """Thresholds that catch the most off-topic questions with at most 3% wrong abstentions.

    Among equally good settings the one farthest from both kinds of error is kept: the
    middle of the feasible range, so unseen questions have room on either side. The margin
    rule stays as configured (off): it separated nothing on the tuning set.
    """
    feasible: list[tuple[float, AbstentionPolicy]] = []
    grid = itertools.product(
        np.arange(0.15, 0.46, 0.01),
        np.arange(0.30, 0.71, 0.02),
        np.arange(0.0, 8.01, 0.5),
        [base.min_margin],
    )
    for min_score, confident, lexical, margin in grid:
        if confident < min_score:
            continue
        policy = replace(
            base,
            min_score=round(float(min_score), 3),
            confident_score=round(float(confident), 3),
            min_lexical=round(float(lexical), 2),
            min_margin=round(float(margin), 3),
        )
        report = score_mode("hybrid", real, areas, off, policy)
        if report.false_abstention <= 0.03:
            feasible.append((report.abstention_recall - report.false_abstention, policy))
    if not feasible:
        return base
    top = max(score for score, _ in feasible)
    best = [policy for score, policy in feasible if score == top]
    return best[len(best) // 2]


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
        f"policy: min_score={p.min_score} confident_score={p.confident_score} "
        f"min_lexical={p.min_lexical} min_margin={p.min_margin} (lexical-only: min_bm25={p.min_bm25})"
    )
    if report.calibrated:
        c = report.calibrated
        lines.append(
            f"calibrated: IPBOT_ABSTAIN_MIN_SCORE={c.min_score} "
            f"IPBOT_ABSTAIN_CONFIDENT_SCORE={c.confident_score} "
            f"IPBOT_ABSTAIN_MIN_LEXICAL={c.min_lexical} IPBOT_ABSTAIN_MIN_MARGIN={c.min_margin}"
        )
    if report.misses:
        lines.append(f"hybrid misses at 3 ({len(report.misses)}):")
        lines += [f"  {m}" for m in report.misses]
    return "\n".join(lines)
