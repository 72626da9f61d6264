"""Prometheus metrics and platform heartbeats: counted where things happen, served by bot.http.

Counters live in one process-wide registry, as prometheus-client intends; the gauges that
describe state (pending outbox, index age) are read from the store and index when scraped.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

QUESTIONS = Counter(
    "ipbot_questions",
    "Questions answered or abstained on, as stored (inline queries are not counted)",
    ["platform", "area", "answered"],
    registry=REGISTRY,
)
ANSWER_SECONDS = Histogram(
    "ipbot_answer_seconds",
    "Time from an admitted question to its answer (embedding and ranking)",
    ["platform"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
VOTES = Counter(
    "ipbot_feedback_votes", "Helpful / not helpful votes recorded", ["helpful"], registry=REGISTRY
)
DELIVERIES = Counter(
    "ipbot_broadcast_deliveries",
    "Broadcast sends by what the platform answered (delivered, blocked, retry, moved, failed)",
    ["platform", "result"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "ipbot_outbox_pending", "Deliveries waiting in the outbox", ["platform"], registry=REGISTRY
)
INDEX_INFO = Gauge(
    "ipbot_index_info",
    "The loaded index: corpus version and hash (value always 1)",
    ["corpus_version", "corpus_hash", "model"],
    registry=REGISTRY,
)
INDEX_AGE = Gauge("ipbot_index_age_seconds", "Seconds since the index was built", registry=REGISTRY)
PLATFORM_SEEN = Gauge(
    "ipbot_platform_last_seen_timestamp_seconds",
    "When each platform last answered ipbot (a poll, a heartbeat, a webhook check)",
    ["platform"],
    registry=REGISTRY,
)


def record_question(platform: str, area: str | None, answered: bool, seconds: float) -> None:
    """One stored question: the single place questions are counted (Assistant.ask calls it)."""
    QUESTIONS.labels(platform, area or "none", str(answered).lower()).inc()
    ANSWER_SECONDS.labels(platform).observe(seconds)


def record_vote(helpful: bool) -> None:
    VOTES.labels(str(helpful).lower()).inc()


def record_delivery(platform: str, result: str) -> None:
    DELIVERIES.labels(platform, result).inc()


class Liveness:
    """When each platform last answered ipbot (a poll, a heartbeat, a webhook check): what
    /readyz calls connected. Adapters report to the process-wide `LIVENESS`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._seen: dict[str, float] = {}

    def seen(self, platform: str) -> None:
        self._seen[platform] = self._clock()
        PLATFORM_SEEN.labels(platform).set(time.time())

    def silent_for(self, platform: str) -> float | None:
        """Seconds since the platform last answered; None if it never has."""
        seen = self._seen.get(platform)
        return None if seen is None else self._clock() - seen


LIVENESS = Liveness()


def describe_index(corpus_version: str, corpus_hash: str, model: str, built_at: str) -> None:
    """Set the index gauges (called at each scrape: the age grows, a swap changes the info)."""
    INDEX_INFO.clear()
    INDEX_INFO.labels(corpus_version, corpus_hash[:12], model).set(1)
    try:
        built = dt.datetime.fromisoformat(built_at)
    except ValueError:
        return
    if built.tzinfo is None:
        built = built.replace(tzinfo=dt.UTC)
    INDEX_AGE.set((dt.datetime.now(dt.UTC) - built).total_seconds())


def set_pending(pending: dict[str, int]) -> None:
    OUTBOX_PENDING.clear()
    for platform, count in pending.items():
        OUTBOX_PENDING.labels(platform).set(count)


def exposition() -> bytes:
    """Everything, in the Prometheus text format."""
    return generate_latest(REGISTRY)
