"""Follow-up questions: "and what about for software?" is read with the previous question.

Each person in each chat (`chat_key`) keeps only their last standalone question, for a few
minutes, and only the most recent conversations are kept at all, so memory stays bounded
however many people talk to the bot.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from retrieval.corpus import Passage
from retrieval.index import tokenize

FOLLOW_UP_SECONDS = 300.0
MAX_CONVERSATIONS = 10_000
MAX_FOLLOW_UP_WORDS = 12  # a longer message says enough to stand on its own
_OPENERS = re.compile(
    r"^(?:and|but|also|ok(?:ay)?,? and|so)\b|^(?:what|how)\s+about\b|^what\s+if\b|"
    r"^(?:is|does|would)\s+(?:it|that|this)\s+(?:the\s+same|also|still|different)\b|"
    r"^same\s+(?:for|with|question)\b|^(?:in|for)\s+that\s+case\b|"
    r"^(?:does|do|would|will|can|could|is|are)\s+(?:that|this|these|those)\b|"
    r"^how\s+(?:does|do|is|would)\s+(?:that|this)\b|^anything\s+(?:specific|special|else)\b",
    re.I,
)
# How a continuation opens in the other languages ipbot answers: "and", "but", "what about",
# "what if", "in that case", "same question". Words that also open standalone questions are
# left out or kept only with the word that follows: Spanish "si" (if), French "en" and "un",
# Italian "e" (typed for "è", is), Polish and Czech "a" and "i" (English "a" and "I"),
# Slovenian "ali" (a question's first word, not Croatian "but"), Latvian "kā ar" (how, with).
_OTHER_OPENERS = (  # fmt: skip
    # German, Dutch
    "und",
    "aber",
    "auch",
    "was ist mit",
    "wie ist es mit",
    "wie sieht es mit",
    "und wenn",
    "was wenn",
    "was passiert wenn",
    "gilt das auch",
    "ist das auch",
    "gleiche frage",
    "in dem fall",
    "in diesem fall",
    "maar",
    "ook",
    "en als",
    "en voor",
    "en bij",
    "en wat",
    "en hoe",
    "en met",
    "wat als",
    "hoe zit het met",
    "geldt dat ook",
    "zelfde vraag",
    "dezelfde vraag",
    "in dat geval",
    # French
    "et",
    "mais",
    "alors",
    "aussi",
    "qu'en est-il",
    "quid de",
    "quid du",
    "quid des",
    "que se passe-t-il si",
    "même question",
    "dans ce cas",
    "est-ce pareil",
    "c'est pareil",
    # Spanish, Portuguese, Italian, Romanian
    "y",
    "pero",
    "también",
    "qué pasa con",
    "qué pasa si",
    "que pasa si",
    "qué hay de",
    "lo mismo",
    "la misma pregunta",
    "en ese caso",
    "en este caso",
    "mas",
    "também",
    "e se",
    "e para",
    "e quanto a",
    "e no caso",
    "o mesmo",
    "nesse caso",
    "neste caso",
    "a mesma pergunta",
    "ma",
    "anche",
    "e per",
    "e nel caso",
    "e in caso",
    "e riguardo",
    "e con",
    "cosa succede se",
    "stessa domanda",
    "la stessa domanda",
    "in quel caso",
    "in questo caso",
    "și",
    "şi",
    "dar dacă",
    "dar daca",
    "dar pentru",
    "ce se întâmplă dacă",
    "în acest caz",
    # Nordic, Finnish, Estonian
    "och",
    "og",
    "men om",
    "men hvis",
    "men vad",
    "men hvad",
    "men hva",
    "vad gäller",
    "hur är det med",
    "vad händer om",
    "hvad med",
    "hva med",
    "hvad hvis",
    "hva om",
    "hva hvis",
    "samma fråga",
    "i så fall",
    "gäller det också",
    "gælder det også",
    "gjelder det også",
    "ja",
    "entä",
    "mutta",
    "mitä jos",
    "aga",
    "mis siis kui",
    # Slavic (Latin script)
    "ale",
    "a co",
    "a jeśli",
    "a jesli",
    "a gdy",
    "a jak",
    "a dla",
    "a w przypadku",
    "co jeśli",
    "co jesli",
    "i dla",
    "w takim razie",
    "to samo",
    "a kdyby",
    "a když",
    "a kdyz",
    "a pokud",
    "a v případě",
    "co když",
    "co kdyz",
    "totéž",
    "a čo",
    "a ak",
    "a keď",
    "a v prípade",
    "čo ak",
    "a što",
    "a sto",
    "a ako",
    "što ako",
    "sto ako",
    "i za",
    "a kaj",
    "kaj če",
    # Greek, Cyrillic
    "και",
    "κι",
    "αλλά",
    "τι γίνεται με",
    "τι γίνεται αν",
    "κι αν",
    "и",
    "а",
    "но",
    "ами",
    "і",
    "й",
    "але",
    "а ако",
    "а якщо",
    "а що",
    "а какво",
    # Hungarian, Baltic, Turkish, Maltese, Irish
    "és",
    "de ha",
    "de mi",
    "mi a helyzet",
    "mi van ha",
    "mi történik ha",
    "ugyanez",
    "o jei",
    "o kas",
    "o kaip",
    "ir",
    "bet",
    "un ja",
    "peki",
    "ya",
    "ve",
    "u jekk",
    "u għal",
    "imma",
    "agus",
    "ach",
    "cad faoi",
)
_ALTERNATIVES = "|".join(re.escape(o) for o in sorted(_OTHER_OPENERS, key=len, reverse=True))
_OTHER = re.compile(rf"^(?:{_ALTERNATIVES})(?=[\s,?!.:;]|$)", re.I)
FOLLOW_UP_NOTE = "I read this together with your previous question"
DETAIL_UNMENTIONED = (
    "None of these passages mentions {words}; they answer your previous question in general."
)
SAME_START = 5  # stems that begin alike are taken for one word (licens-, licenc-)
_DETAIL_WORD = re.compile(r"[^\W\d_][\w'-]*")
NOTE_QUOTE_CHARS = 200  # of the previous question, in that note
FOLLOW_UP_NOTES: dict[str, str] = {  # "read together with your previous question"
    "bg": "Прочетено заедно с предишния ви въпрос",
    "cs": "Čteno spolu s vaší předchozí otázkou",
    "da": "Læst sammen med dit forrige spørgsmål",
    "de": "Zusammen mit Ihrer vorigen Frage gelesen",
    "el": "Διαβάστηκε μαζί με την προηγούμενη ερώτησή σας",
    "es": "Leído junto con su pregunta anterior",
    "et": "Loetud koos teie eelmise küsimusega",
    "fi": "Luettu yhdessä edellisen kysymyksesi kanssa",
    "fr": "Lu avec votre question précédente",
    "ga": "Léite in éineacht le do cheist roimhe seo",
    "he": "נקרא יחד עם השאלה הקודמת שלך",
    "hr": "Pročitano zajedno s vašim prethodnim pitanjem",
    "hu": "Az előző kérdésével együtt értelmezve",
    "it": "Letto insieme alla sua domanda precedente",
    "lt": "Perskaityta kartu su ankstesniu jūsų klausimu",
    "lv": "Lasīts kopā ar jūsu iepriekšējo jautājumu",
    "mk": "Прочитано заедно со вашето претходно прашање",
    "mt": "Moqri flimkien mal-mistoqsija preċedenti tiegħek",
    "nl": "Gelezen samen met je vorige vraag",
    "no": "Lest sammen med det forrige spørsmålet ditt",
    "pl": "Odczytane razem z poprzednim pytaniem",
    "pt": "Lido em conjunto com a sua pergunta anterior",
    "ro": "Citit împreună cu întrebarea dumneavoastră anterioară",
    "sk": "Čítané spolu s vašou predchádzajúcou otázkou",
    "sl": "Prebrano skupaj z vašim prejšnjim vprašanjem",
    "sq": "Lexuar së bashku me pyetjen tuaj të mëparshme",
    "sv": "Läst tillsammans med din föregående fråga",
    "tr": "Önceki sorunuzla birlikte okundu",
    "uk": "Прочитано разом із вашим попереднім запитанням",
}


# Thanks and greetings, in the languages ipbot answers, and the words that come with them
# ("thanks a lot, very useful!"): a message made only of these is no question, and it must not
# reach the moderators' list of what the corpus lacks
_THANKS = frozenset(
    """thanks thank thx ty cheers merci danke dank dankeschön gracias grazie obrigado obrigada
    bedankt dziękuję dzięki dzieki tack takk tak díky děkuji dakujem ďakujem kiitos köszönöm
    köszi mulțumesc multumesc mersi ευχαριστώ ευχαριστω hvala hvala lijepa ačiū aciu paldies aitäh
    teşekkürler teşekkür sağol дякую спасибо благодаря благодарам grazzi""".split()
)
_GREETINGS = frozenset(
    """hi hello hey hallo hola ciao salut bonjour servus moin hej hei moi ahoj czesc cześć
    szia olá ola halo bok zdravo živjo sveiki labas tere merhaba γεια привіт здравейте
    здраво bongu""".split()
)
_ACKNOWLEDGEMENTS = frozenset(
    """ok okay great perfect cool nice awesome excellent understood got good super top fine
    noted wow lol haha hahaha hehe xd""".split()
)
_ALONGSIDE = frozenset(
    """you so much very a lot for the your this that it answer answers reply info information
    useful helpful morning afternoon evening there all everyone bot ipbot again many it's
    beaucoup vielen viel schön sehr muchas mucho muito mille molte tante bien très bardzo moc
    veel hartelijk mycket meget paljon nagyon mult πολύ puno labai liels väga çok дуже много""".split()
)
_THANKFUL = _THANKS | _ACKNOWLEDGEMENTS
_SMALL_TALK = _THANKFUL | _GREETINGS | _ALONGSIDE
_SMALL_TALK_WORDS = 8


def _reaction(text: str) -> bool:
    """A message of emoji and smileys only, with no letters or digits (but "+1")."""
    kept = "".join(text.split())
    if kept in ("+1", ":)", ":-)", ":D", ";)", "^^"):
        return True
    return (
        bool(kept)
        and all(unicodedata.category(c) in ("So", "Sk", "Mn", "Cf") or c in "!." for c in kept)
        and any(unicodedata.category(c) == "So" for c in kept)
    )


def small_talk(text: str) -> str | None:
    """ "thanks" for a message that only thanks or acknowledges ("ok, great"), "greeting" for
    one that only greets, else None."""
    words = re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", text.lower())
    if not words:  # "👍", "🙏🙏", "+1", ":)": a reaction typed as a message
        return "thanks" if _reaction(text) else None
    if len(words) > _SMALL_TALK_WORDS:
        return None
    if not _SMALL_TALK.issuperset(words):
        return None
    if not _THANKFUL.isdisjoint(words):
        return "thanks"
    return "greeting" if not _GREETINGS.isdisjoint(words) else None


@dataclass(frozen=True)
class Understood:
    """A question as it will be searched, and the earlier question it was combined with."""

    text: str
    previous: str | None = None
    detail: str = ""  # the follow-up as it was typed

    def unmentioned_note(self, language: str, passages: Sequence[Passage]) -> str | None:
        """Says which words of an English follow-up no passage shown mentions ("Japan"): the
        passages then answer the previous question in general, which the reader should know."""
        if self.previous is None or language != "en" or not passages:
            return None
        words = unmentioned(self.detail, [f"{p.title} {p.text}" for p in passages])
        if not words:
            return None
        return DETAIL_UNMENTIONED.format(words=" or ".join(f"“{word}”" for word in words))

    def note(self, language: str = "en") -> str | None:
        """How the question was understood, for the user to see (None if read on its own), in
        the language the answer is read in where we have the words."""
        if self.previous is None:
            return None
        previous = self.previous
        if len(previous) > NOTE_QUOTE_CHARS:  # a pasted page is not quoted back whole
            previous = previous[:NOTE_QUOTE_CHARS].rsplit(" ", 1)[0] + " …"
        return f'{FOLLOW_UP_NOTES.get(language, FOLLOW_UP_NOTE)}: "{previous}"'


def is_follow_up(question: str) -> bool:
    """A short message that opens like a continuation ("and...", "what about...", "what if...",
    "und bei...", "et si...", "¿y para...?")."""
    text = question.strip().lstrip("¿¡«\"'“„(").replace("’", "'")
    if len(text.split()) > MAX_FOLLOW_UP_WORDS:
        return False
    return bool(_OPENERS.search(text) or _OTHER.search(text))


def combine(previous: str, follow_up: str) -> str:
    """One question to search: the earlier one, then the new detail, twice.

    Once was not enough: a follow-up of three words after a question of fifteen was outweighed
    by it, and "what if the partner is in China?" got the previous answer again.
    """
    detail = follow_up.strip()
    return f"{previous.rstrip(' ?.!')}? {detail} {detail}"


def unmentioned(detail: str, texts: Sequence[str]) -> list[str]:
    """The words of a follow-up that none of the texts uses, stemmed as search stems them (an
    acronym such as "UK" or "US" as written, since "us" is also a stop word)."""
    stems: set[str] = set()
    for text in texts:
        stems.update(tokenize(text))
    stems |= {stem[:SAME_START] for stem in stems}  # "licensing" and "licence": one word
    missing = []
    for word in dict.fromkeys(_DETAIL_WORD.findall(detail)):
        if word.isupper() and len(word) >= 2:
            if not any(re.search(rf"\b{re.escape(word)}\b", text) for text in texts):
                missing.append(word)
            continue
        stem = tokenize(word)
        if len(word) >= 3 and stem and stem[0] not in stems and stem[0][:SAME_START] not in stems:
            missing.append(word)
    return missing


def as_asked(text: str) -> str:
    """A searched question as people put it, the detail once: what they read (the answer's
    question, a "now covered" notice) and what moderators read in /gaps."""
    start = text.find("? ")
    while start != -1:
        tail = text[start + 2 :]
        half = len(tail) // 2
        if len(tail) % 2 and tail[half] == " " and tail[:half] == tail[half + 1 :]:
            return text[: start + 2] + tail[:half]
        start = text.find("? ", start + 1)
    return text


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
            return Understood(combine(previous, question), previous, question)
        self._store(key, question)
        return Understood(question)

    def forget(self, key: str) -> None:
        """Leave a question out of the conversation: one the corpus could not answer is no
        topic to continue (a cover letter, then "and for software?")."""
        self._last.pop(key, None)

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
