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
NOT_ABOUT_IP = (
    "I answer questions on managing intellectual property in research and innovation, and this "
    "does not look like one. If it is, name the IP side of it (a patent, a licence, who owns "
    "results or code, an agreement for sharing samples or data, open science...)."
)
NOT_COVERED_IN: dict[str, str] = {  # for questions read in another language
    "bg": "Не намерих това в материалите от Кодекса на добрите практики, които мога да цитирам.",
    "cs": "V materiálech Kodexu postupů, které mohu citovat, se to nenachází.",
    "da": "Jeg fandt ikke dette i det materiale fra adfærdskodeksen, som jeg kan citere.",
    "de": "Dazu habe ich in den Texten des Verhaltenskodex, die ich zitieren kann, nichts gefunden.",
    "el": "Δεν το βρήκα στο υλικό του Κώδικα Πρακτικής που μπορώ να παραθέσω.",
    "es": "No he encontrado esto en el material del código de buenas prácticas que puedo citar.",
    "et": "Ma ei leidnud seda tegevusjuhendi materjalist, mida saan tsiteerida.",
    "fi": "En löytänyt tätä käytännesääntöjen aineistosta, jota voin lainata.",
    "fr": "Je n'ai pas trouvé cela dans les textes du code de bonnes pratiques que je peux citer.",
    "ga": "Níor aimsigh mé é seo san ábhar ón gCód Cleachtais is féidir liom a lua.",
    "he": "לא מצאתי את זה בחומר של קוד הנוהג שאני יכול לצטט.",
    "hr": "To se ne nalazi u materijalima Kodeksa prakse koje mogu citirati.",
    "hu": "Ezt nem találtam a gyakorlati kódex idézhető anyagaiban.",
    "it": "Non ho trovato nulla su questo nel materiale del codice di buone pratiche che posso citare.",
    "lt": "Neradau to praktikos kodekso medžiagoje, kurią galiu cituoti.",
    "lv": "To neatradu prakses kodeksa materiālos, ko varu citēt.",
    "mk": "Ова не го најдов во материјалите од Кодексот на практика што можам да ги цитирам.",
    "mt": "Ma sibtx dan fil-materjal tal-Kodiċi ta' Prattika li nista' nikkwota.",
    "nl": "Ik heb dit niet gevonden in het materiaal van de praktijkcode dat ik kan citeren.",
    "no": "Jeg fant ikke dette i materialet fra praksiskodeksen som jeg kan sitere.",
    "pl": "W materiałach kodeksu postępowania, które mogę cytować, nie ma odpowiedzi na to pytanie.",
    "pt": "Não encontrei isto no material do código de práticas que posso citar.",
    "ro": "Nu am găsit acest lucru în materialele codului de bune practici pe care le pot cita.",
    "sk": "V materiáloch kódexu postupov, ktoré môžem citovať, sa to nenachádza.",
    "sl": "Tega v gradivu kodeksa ravnanja, ki ga lahko navedem, ni.",
    "sq": "Nuk e gjeta këtë në materialet e Kodit të Praktikës që mund të citoj.",
    "sv": "Jag hittade inte detta i det material från uppförandekoden som jag kan citera.",
    "tr": "Bunu alıntılayabildiğim Uygulama Kuralları materyalinde bulamadım.",
    "uk": "У матеріалах Кодексу практики, які я можу цитувати, цього немає.",
}
SORRY = "Sorry, something went wrong on my side. Please try again in a moment."
EXAMPLE_QUESTION = "Who owns the results of a joint research project?"
SMALL_TALK = {  # replies to a message that only thanks or greets: no search, nothing stored
    "thanks": "You're welcome. Ask me another question about managing IP in research any time.",
    "greeting": (
        "Hello! Ask me a question about managing IP in research, for example: "
        f"{EXAMPLE_QUESTION} /help lists what else I can do."
    ),
}


def not_covered(answer: Answer) -> str:
    """What a declined answer says first, in the language the question was read in where we
    have the words (area names and commands stay as they are in every language)."""
    if not answer.about_ip:
        return NOT_ABOUT_IP
    return NOT_COVERED_IN.get(answer.language, NOT_COVERED)


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
