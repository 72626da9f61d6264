"""Many users at once: questions are embedded, ranked and stored in batches, and each user
still gets their own answer and their own stored question; storing never costs an answer."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from bot.assistant import Assistant
from bot.replies import AnswerReply, User
from bot.store import Store

QUESTIONS = [
    "Who owns the results of a joint research project?",
    "What is a material transfer agreement?",
    "How should we value a patent before licensing it?",
    "Can researchers publish before filing a patent application?",
    "What does FAIR data mean?",
    "Who pays for patent costs in a consortium?",
    "What is a non-disclosure agreement for?",
    "How do we choose between exclusive and non-exclusive licences?",
]


async def test_users_asking_at_once_each_get_their_own_stored_question(
    assistant: Assistant, store: Store
) -> None:
    users = [User("telegram", str(n)) for n in range(len(QUESTIONS) * 2)]
    asked = QUESTIONS * 2

    replies = await asyncio.gather(*(assistant.ask(u, q) for u, q in zip(users, asked, strict=True)))

    assert all(isinstance(r, AnswerReply) for r in replies), replies
    ids = [r.question_id for r in replies if isinstance(r, AnswerReply)]
    assert None not in ids and len(set(ids)) == len(asked), "two users were given one question"
    stored = [await store.question(qid) for qid in ids if qid is not None]
    assert [q.text if q else None for q in stored] == asked, "a button would open another question"
    assert [r.answer.question for r in replies if isinstance(r, AnswerReply)] == asked
    alone = await assistant.ask(User("telegram", "alone"), QUESTIONS[0])
    assert isinstance(alone, AnswerReply) and isinstance(replies[0], AnswerReply)
    # each text is embedded on its own, so a crowd changes nothing in anyone's answer
    assert replies[0].answer.hits == alone.answer.hits, (
        "a question asked in a crowd was answered differently"
    )


async def test_a_question_that_cannot_be_stored_is_still_answered(
    assistant: Assistant, store: Store
) -> None:
    async with store.engine.begin() as connection:  # the table is gone: every insert fails
        await connection.execute(text("ALTER TABLE questions RENAME TO questions_gone"))

    replies = await asyncio.gather(
        *(assistant.ask(User("telegram", str(n)), q) for n, q in enumerate(QUESTIONS))
    )

    assert all(isinstance(r, AnswerReply) and r.answer.hits for r in replies), replies
    assert all(isinstance(r, AnswerReply) and r.question_id is None for r in replies), (
        "an answer offered buttons for a question that was never stored"
    )
