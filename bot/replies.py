"""What the assistant answers: small typed replies that each adapter formats for its platform.

Also who is asking and where (`User`, `Chat`, `Context`): plain data, no platform library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.commands import Command
from bot.conversation import chat_key
from bot.sender import UpdateItem
from bot.store import Suggestion
from retrieval.corpus import Area, Passage
from retrieval.search import Answer

DISCLAIMER = (
    "Guidance from the EU Code of Practice on managing intellectual assets "
    "(Recommendation (EU) 2023/499) and related EU sources, not legal advice."
)
HELPDESK_URL = "https://intellectual-property-helpdesk.ec.europa.eu/"
HUMAN_HELP = (
    "For advice on your own case, ask the European IP Helpdesk (free and confidential) "
    "or your institution's technology transfer office."
)
NOT_COVERED = "I could not find this in the Code of Practice material I can cite."
SORRY = "Sorry, something went wrong on my side. Please try again in a moment."
EXAMPLE_QUESTION = "Who owns the results of a joint research project?"


@dataclass(frozen=True)
class User:
    """Who asked, as a platform-qualified ID: enough for rate limits, nothing personal."""

    platform: str
    id: str
    language: str | None = None  # the platform's idea of the user's language: a hint only

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.id}"


async def _not_admin() -> bool:
    return False


@dataclass(frozen=True)
class Chat:
    """Where a message came from: the platform's chat id and what kind of chat it is."""

    platform: str
    id: str
    kind: str = "private"  # private, group, channel, dm

    @property
    def is_private(self) -> bool:
        return self.kind in ("private", "dm")


@dataclass(frozen=True)
class Context:
    """Who is asking, where, and how the platform can tell whether they administer the chat."""

    user: User
    chat: Chat
    is_chat_admin: Callable[[], Awaitable[bool]] = field(default=_not_admin, compare=False)
    roles: frozenset[str] = frozenset()  # the platform's role ids (Discord), for moderator roles
    thread: str | None = None  # a forum topic of a group (Telegram), where replies must go

    @property
    def conversation(self) -> str:
        """The key under which this person's previous question here is kept for follow-ups."""
        return chat_key(self.chat.platform, self.chat.id, self.user.id, self.thread)

    @classmethod
    def private(cls, user: User) -> Context:
        return cls(user, Chat(user.platform, user.id, "private"))


@dataclass(frozen=True)
class AnswerReply:
    """A question's answer, or an honest "not covered" with suggestions.

    `question_id` names the stored question, so buttons under the answer carry only that id.
    """

    answer: Answer
    question_id: int | None = None
    disclaimer: str = DISCLAIMER


@dataclass(frozen=True)
class AreaSummary:
    area: Area
    passages: int


@dataclass(frozen=True)
class AreaList:
    areas: tuple[AreaSummary, ...]


@dataclass(frozen=True)
class AreaPage:
    """One page of an area's passages, for browsing without a question."""

    area: Area
    passages: tuple[Passage, ...]
    page: int
    pages: int


@dataclass(frozen=True)
class HelpReply:
    intro: str
    commands: tuple[Command, ...]
    example: str
    disclaimer: str = DISCLAIMER


@dataclass(frozen=True)
class AboutReply:
    corpus_version: str
    corpus_hash: str
    indexed_at: str | None
    passages: int
    model: str
    problems: tuple[str, ...] = ()  # shown to moderators: why the corpus on disk is not served


@dataclass(frozen=True)
class Notice:
    """A short message instead of an answer: usage hints, rate limits, polite errors."""

    kind: str  # "usage", "rate_limited", "error", "unknown_command"
    text: str


@dataclass(frozen=True)
class UpdatesReply:
    """The latest updates, newest first (of one area, if asked)."""

    items: tuple[UpdateItem, ...]
    area: Area | None = None


@dataclass(frozen=True)
class AnnouncePreview:
    """What a moderator is about to send, and to how many chats, before they confirm."""

    item: UpdateItem
    token: str  # short and stable: fits a button's data
    subscribers: int
    already_published: bool


def problems_note(problems: tuple[str, ...]) -> str:
    """For moderators: the corpus on disk is broken, so an older good version is served."""
    shown = "\n".join(problems[:10]) + ("\n..." if len(problems) > 10 else "")
    return (
        f"The corpus files have {len(problems)} problem(s), so the last good version is "
        f"served. Fix them, then /reload:\n{shown}"
    )


@dataclass(frozen=True)
class RefreshReply:
    """A moderator's refresh summary, with a Publish button for each new update it found."""

    text: str
    ok: bool
    offers: tuple[tuple[str, str], ...] = ()  # (update title, announce token)


@dataclass(frozen=True)
class SuggestionQueue:
    """Open community suggestions for a moderator, each with Accept and Reject buttons."""

    items: tuple[Suggestion, ...]


@dataclass(frozen=True)
class Quiet:
    """Nothing to send, not even "typing...": the user is over the rate limit and was told."""


Reply = (
    AnswerReply
    | AreaList
    | AreaPage
    | HelpReply
    | AboutReply
    | Notice
    | UpdatesReply
    | AnnouncePreview
    | RefreshReply
    | SuggestionQueue
    | Quiet
)
