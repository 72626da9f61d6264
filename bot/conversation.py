"""Follow-up questions: "and what about for software?" is read with the previous question.

Each person in each chat (`chat_key`) keeps only their last standalone question, for a few
minutes, and only the most recent conversations are kept at all, so memory stays bounded
however many people talk to the bot.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FOLLOW_UP_SECONDS = 300.0
MAX_CONVERSATIONS = 10_000
MAX_FOLLOW_UP_WORDS = 12  # a longer message says enough to stand on its own
_OPENERS = re.compile(
    r"^(?:and|but|also|ok(?:ay)?,? and|so)\b|^(?:what|how)\s+about\b|^what\s+if\b|"
    r"^(?:is|does|would)\s+(?:it|that|this)\s+(?:the\s+same|also|still|different)\b|"
    r"^same\s+(?:for|with|question)\b|^(?:in|for)\s+that\s+case\b",
    re.I,
)


@dataclass(frozen=True)
class Understood:
    """A question as it will be searched, and the earlier question it was combined with."""

    text: str
    previous: str | None = None

    @property
    def note(self) -> str | None:
        """How the question was understood, for the user to see (None if read on its own)."""
        if self.previous is None:
            return None
        return f'I read this together with your previous question: "{self.previous}"'


def is_follow_up(question: str) -> bool:
    """A short message that opens like a continuation ("and...", "what about...", "what if...")."""
    text = question.strip()
    return len(text.split()) <= MAX_FOLLOW_UP_WORDS and bool(_OPENERS.search(text))


def combine(previous: str, follow_up: str) -> str:
    """One question to search: the earlier one, then the new detail."""
    return f"{previous.rstrip(' ?.!')}? {follow_up.strip()}"


class Conversations:
    """The last standalone question of each chat, forgotten after `ttl` seconds."""

    def __init__(
        self,
        ttl: float = FOLLOW_UP_SECONDS,
        capacity: int = MAX_CONVERSATIONS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl, self.capacity, self._clock = ttl, capacity, clock
        self._last: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def understand(self, key: str, question: str) -> Understood:
        """Combine a follow-up with the chat's previous question; remember standalone ones."""
        previous = self._previous(key)
        if previous is not None and is_follow_up(question):
            self._store(key, previous)  # the topic is still being discussed: keep it alive
            return Understood(combine(previous, question), previous)
        self._store(key, question)
        return Understood(question)

    def remember(self, key: str, question: str) -> None:
        """Continue a conversation elsewhere, e.g. in the thread a bot opened for an answer."""
        self._store(key, question)

    def _previous(self, key: str) -> str | None:
        entry = self._last.get(key)
        if entry is None:
            return None
        question, at = entry
        if self._clock() - at > self.ttl:
            del self._last[key]
            return None
        return question

    def _store(self, key: str, question: str) -> None:
        self._last[key] = (question, self._clock())
        self._last.move_to_end(key)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)


def chat_key(platform: str, chat_id: object, user_id: object, thread: object = None) -> str:
    """The conversation a message belongs to: one per person in each chat or channel (and
    forum topic), so that in a group another member's "and for software?" is never read with
    your question, nor a question in one topic with one asked in another."""
    return f"{platform}:{chat_id}:{thread or ''}:{user_id}"
