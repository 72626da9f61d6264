"""What moderators see of what people asked: figures (/stats) and the corpus to-do list (/gaps).

Questions are stored without who asked. Gaps are the questions ipbot abstained on or that got
"not helpful", grouped by meaning with the embedding model ipbot already runs.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bot.conversation import as_asked
from bot.store import AskedQuestion, Store
from bot.store.tables import utcnow
from retrieval.search import Retriever

SAME_GAP_COSINE = 0.6  # paraphrases score 0.63-0.84 with MiniLM, different topics under 0.5
EXAMPLES_PER_GAP = 3
DEFAULT_DAYS = 30
MAX_DAYS = 3650


def as_text_cell(text: str) -> str:
    """A user's text as a spreadsheet shows it, never as a formula: a cell that starts with
    =, +, -, @, a tab or a carriage return gets a leading apostrophe (OWASP's advice), since
    anyone can type "=HYPERLINK(...)" as a question and a moderator opens the export."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@dataclass(frozen=True)
class Gap:
    """Unanswered questions that mean much the same, and the area closest to them."""

    questions: tuple[str, ...]
    nearest_area: str

    @property
    def size(self) -> int:
        return len(self.questions)


@dataclass(frozen=True)
class Usage:
    """What people asked in a period, counted: the figures of /stats and of `ipbot report`."""

    questions: int
    answered: int
    helpful: int  # votes
    not_helpful: int
    latency_median_ms: float | None
    latency_p95_ms: float | None
    per_day: dict[dt.date, tuple[int, int]]  # day: (asked, answered), days with questions only
    per_area: list[tuple[str, int]]  # area title and questions, the most asked first


def count_usage(asked: list[AskedQuestion], area_title: Callable[[str | None], str]) -> Usage:
    """Count questions, answers, votes and answer times; per day and per area."""
    per_day: dict[dt.date, tuple[int, int]] = {}
    for question in asked:
        total, answered = per_day.get(question.asked_at.date(), (0, 0))
        per_day[question.asked_at.date()] = (total + 1, answered + question.answered)
    latencies = sorted(q.latency_ms for q in asked if q.latency_ms is not None)
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
    return Usage(
        questions=len(asked),
        answered=sum(q.answered for q in asked),
        helpful=sum(q.helpful for q in asked),
        not_helpful=sum(q.not_helpful for q in asked),
        latency_median_ms=statistics.median(latencies) if latencies else None,
        latency_p95_ms=p95,
        per_day=per_day,
        per_area=Counter(area_title(q.area) for q in asked if q.area).most_common(),
    )


def is_gap(question: AskedQuestion) -> bool:
    return not question.answered or question.not_helpful > question.helpful


def group_by_meaning(vectors: np.ndarray, threshold: float = SAME_GAP_COSINE) -> list[list[int]]:
    """Greedy grouping: each question joins the first group whose centre it is close to."""
    groups: list[list[int]] = []
    centres: list[np.ndarray] = []
    for row, vector in enumerate(vectors):
        scores = [float(centre @ vector) for centre in centres]
        best = int(np.argmax(scores)) if scores else -1
        if best >= 0 and scores[best] >= threshold:
            groups[best].append(row)
            centre = vectors[groups[best]].mean(axis=0)
            centres[best] = centre / max(float(np.linalg.norm(centre)), 1e-12)
        else:
            groups.append([row])
            centres.append(vector)
    return groups


class Moderation:
    """Figures and gaps for moderators, whatever the platform."""

    def __init__(self, store: Store, retriever: Retriever):
        self.store, self.retriever = store, retriever

    async def asked(self, days: int) -> list[AskedQuestion]:
        return await self.store.questions_since(utcnow() - dt.timedelta(days=days))

    async def usage(self, days: int = DEFAULT_DAYS) -> Usage:
        return count_usage(await self.asked(days), self._area_title)

    async def stats(self, days: int = DEFAULT_DAYS) -> str:
        """Questions per day and per area, share answered, votes, latency: one short text."""
        usage = await self.usage(days)
        if not usage.questions:
            return f"No questions in the last {days} days."
        lines = [
            f"Last {days} days: {usage.questions} questions, "
            f"{usage.answered / usage.questions:.0%} answered.",
            f"Votes: {usage.helpful} helpful, {usage.not_helpful} not helpful.",
        ]
        if usage.latency_median_ms is not None:
            lines.append(
                f"Answer time: median {usage.latency_median_ms:.0f} ms, "
                f"95% under {usage.latency_p95_ms:.0f} ms."
            )
        per_day = sorted(usage.per_day.items())[-14:]
        lines.append("Per day: " + ", ".join(f"{d.isoformat()} {n}" for d, (n, _) in per_day))
        lines.append("Per area: " + ", ".join(f"{a} {n}" for a, n in usage.per_area))
        return "\n".join(lines)

    async def gaps(self, days: int = DEFAULT_DAYS) -> list[Gap]:
        """Unanswered or unhelpful questions grouped by meaning, the biggest groups first."""
        texts = [as_asked(q.text) for q in await self.asked(days) if is_gap(q)]
        if not texts:
            return []
        embedder = self.retriever.embedder
        vectors = await asyncio.to_thread(embedder.embed, texts)
        index = self.retriever.index
        gaps = []
        for rows in group_by_meaning(vectors):
            centre = vectors[rows].mean(axis=0)
            nearest = index.passages[int(np.argmax(index.vectors @ centre))].area
            gaps.append(Gap(tuple(texts[r] for r in rows), self._area_title(nearest)))
        return sorted(gaps, key=lambda gap: -gap.size)

    async def gaps_text(self, days: int = DEFAULT_DAYS, limit: int = 10) -> str:
        gaps = await self.gaps(days)
        if not gaps:
            return f"No unanswered or unhelpful questions in the last {days} days."
        lines = [f"What the corpus is missing (last {days} days), biggest first:"]
        for number, gap in enumerate(gaps[:limit], start=1):
            examples = "; ".join(f"“{q}”" for q in gap.questions[:EXAMPLES_PER_GAP])
            lines.append(f"{number}. {gap.size} × near {gap.nearest_area}: {examples}")
        return "\n".join(lines)

    async def gaps_csv(self, days: int = DEFAULT_DAYS) -> str:
        """One row per question, with its group: for a spreadsheet."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group", "group_size", "nearest_area", "question"])
        for number, gap in enumerate(await self.gaps(days), start=1):
            for question in gap.questions:
                writer.writerow([number, gap.size, gap.nearest_area, as_text_cell(question)])
        return out.getvalue()

    def _area_title(self, slug: str | None) -> str:
        areas = {a.slug: a.title for a in self.retriever.corpus.areas}
        return areas.get(slug or "", slug or "none")
