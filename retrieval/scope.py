"""Whether a question is about managing IP at all: labelled example questions and the scope model.

Look-alike questions of academic life share the corpus's words and sit close to it in meaning,
so no word list or score threshold separates them; a logistic regression learns it from
examples that moderators keep in `corpus/scope.yaml`, and eval sets use the same format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import yaml

SCOPE_FILE = "scope.yaml"
REGULARISATION = 0.1  # L2 weight; chosen by cross-validation (`ipbot eval --calibrate`)
NEWTON_STEPS = 25  # at most; it converges in about eight on a few hundred examples
CONVERGED = 1e-6  # largest weight change at which the fit stops
_SET_KEYS = ("questions", "off_topic", "near_domain", "gaps")  # gaps: not answerable yet, unused


@dataclass(frozen=True)
class EvalQuestion:
    question: str
    area: str
    expected: tuple[str, ...]


@dataclass(frozen=True)
class EvalSet:
    """Labelled questions: real ones (with the passages that answer them, if known) and
    off-topic ones, of which `near_domain` are the hard look-alikes of academic life."""

    questions: tuple[EvalQuestion, ...]
    off_topic: tuple[str, ...]
    near_domain: tuple[str, ...] = ()

    def examples(self) -> tuple[list[str], np.ndarray]:
        """Question texts and their labels for the scope model: 1 in scope, 0 not."""
        texts = [q.question for q in self.questions] + [*self.off_topic, *self.near_domain]
        labels = np.zeros(len(texts))
        labels[: len(self.questions)] = 1.0
        return texts, labels


def parse_eval_set(text: str) -> tuple[EvalSet, list[tuple[int, str]]]:
    """A question set from YAML, with (line, message) problems instead of exceptions.

    Real questions may be bare text or `q:` with optional `area:` and `expected:` passage ids;
    a set written without seeing the corpus gives only the text (it then counts for
    abstention alone).
    """
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return EvalSet((), ()), [((mark.line + 1) if mark else 0, f"not valid YAML: {exc}")]
    if not isinstance(data, dict):
        return EvalSet((), ()), [(1, "expected the keys questions, near_domain and off_topic")]
    problems = [
        (line_of(text, f"{key}:") or 1, f"unknown key '{key}'")
        for key in data
        if key not in _SET_KEYS
    ]
    questions = []
    for item in _as_list(data.get("questions")):
        question = _eval_question(item)
        if not question.question.strip():
            problems.append((line_of(text, str(item)), "a question without text"))
        questions.append(question)
    return EvalSet(
        tuple(questions),
        tuple(str(q) for q in _as_list(data.get("off_topic"))),
        tuple(str(q) for q in _as_list(data.get("near_domain"))),
    ), problems


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else []


def _eval_question(item: object) -> EvalQuestion:
    if not isinstance(item, dict):
        return EvalQuestion(str(item), "", ())
    text = item.get("q", item.get("question", ""))
    expected = item.get("expected") or ()
    expected = [expected] if isinstance(expected, str) else expected
    return EvalQuestion(str(text), str(item.get("area") or ""), tuple(str(e) for e in expected))


def line_of(text: str, needle: str) -> int:
    """The first line of the file that contains `needle` (1-based), 0 if none does."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle and needle in line:
            return number
    return 0


BEST_FEATURE = -3  # where `scope_features` puts the best passage's similarity


def scope_features(vector: np.ndarray, best: float, ip_term: bool, specific: float) -> np.ndarray:
    """What the scope model reads: the question's meaning (its MiniLM vector), how close the
    best passage is, whether it names an IP concept, and how much of its specific wording
    the passages share (log of the BM25 score over its non-generic words)."""
    extra = np.array([best, float(ip_term), np.log1p(max(specific, 0.0))], dtype=np.float32)
    return np.concatenate([np.asarray(vector, dtype=np.float32), extra])


@dataclass(frozen=True)
class ScopeModel:
    """A logistic regression: the probability that a question is about managing IP."""

    weights: np.ndarray  # one per feature, then the bias

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, regularisation: float = REGULARISATION
    ) -> ScopeModel:
        """Newton's method on the L2-regularised log loss, both classes weighted equally (a
        few more look-alikes than real questions must not tilt it); deterministic."""
        x = np.hstack([features.astype(np.float64), np.ones((len(features), 1))])
        share = labels.mean()
        weight = np.where(labels == 1, 0.5 / share, 0.5 / (1 - share))
        penalty = regularisation * np.eye(x.shape[1])
        penalty[-1, -1] = 0.0  # the bias is not shrunk
        w = np.zeros(x.shape[1])
        for _ in range(NEWTON_STEPS):
            p = _sigmoid(x @ w)
            gradient = x.T @ (weight * (p - labels)) + penalty @ w
            hessian = (x * (weight * p * (1 - p))[:, None]).T @ x + penalty
            step = np.linalg.solve(hessian, gradient)
            w -= step
            if np.abs(step).max() < CONVERGED:
                break
        return cls(w)

    def probability(self, features: np.ndarray) -> float:
        return float(_sigmoid(float(features @ self.weights[:-1] + self.weights[-1])))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def trainable(labels: np.ndarray) -> bool:
    """A model needs examples of both kinds."""
    return 0 < int(labels.sum()) < len(labels)
