""" "Tell me when this is covered": opt-in requests after an abstention, and one personal
notice each once the corpus answers the question (the corpus refresh calls `notify_covered`)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.conversation import as_asked
from bot.replies import Notice, User
from bot.sender import PersonalMessage
from bot.store import CoverageRequest, Store
from retrieval.search import Answer, Retriever

AnswerFn = Callable[[str, str | None], Awaitable[Answer | None]]
COVERED = "Good news: the question you asked me to follow is now covered.\n“{question}”"
CONFIRMED = (
    "Thank you. I will send you a private message when I can answer this question. "
    "/forget removes the request."
)
ALREADY = "You asked already: I will tell you when I can answer this question."
GONE = "This question is no longer stored. Please ask it again."


@dataclass(frozen=True)
class Coverage:
    """What one check found: requests still open before it, and how many now have an answer."""

    open: int
    answered: int


async def request_coverage(store: Store, user: User, question_id: int) -> Notice:
    """A press of "Tell me when this is covered": stored once, confirmed either way."""
    added = await store.request_coverage(question_id, user.platform, user.id)
    if added is None:
        return Notice("expired", GONE)
    return Notice("coverage", CONFIRMED if added else ALREADY)


async def notify_covered(store: Store, answer: AnswerFn) -> Coverage:
    """Ask every open request's question again; queue one notice per request now answered.

    Each question is answered once however many people follow it, and however often it was
    asked. A notice's key names the person and the question, so a check interrupted between
    queueing and marking, or one person who asked the same thing twice and pressed the button
    both times, is never told twice.
    """
    requests = await store.open_coverage_requests()
    by_question: dict[tuple[str, str | None], list[CoverageRequest]] = {}
    for request in requests:
        same = (" ".join(request.question.lower().split()), request.area_filter)
        by_question.setdefault(same, []).append(request)
    answered = 0
    for same, waiting in by_question.items():
        first = waiting[0]
        found = await answer(first.question, first.area_filter)
        if found is None or not found.answered:
            continue
        text = COVERED.format(question=as_asked(first.question))
        stored = PersonalMessage("covered", text, found.lead, found.hits).stored()
        asked = hashlib.sha256(repr(same).encode()).hexdigest()[:24]  # the question, as grouped
        for request in waiting:
            key = f"covered:{request.platform}:{request.chat_id}:{asked}"
            await store.enqueue_notice(request.platform, request.chat_id, "covered", stored, key)
            await store.mark_covered(request.id)
            answered += 1
    return Coverage(len(requests), answered)


def answers_from(retriever: Retriever, top_k: int = 3) -> AnswerFn:
    """`notify_covered`'s `answer` over a retriever: its answer, or None while it abstains."""

    async def answer(question: str, area: str | None) -> Answer | None:
        found = await asyncio.to_thread(retriever.answer, question, area, top_k)
        return found if found.answered else None

    return answer
