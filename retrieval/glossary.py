"""The moderators' glossary: acronyms and synonyms that widen a question before it is searched.

"MTA" alone shares no word with "material transfer agreement" and embeds as noise; writing the
meaning next to the user's own words lets both BM25 and the embedding find the passage. Its
translations of the core IP terms bridge a question in another language to the English rankers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

MAX_TERM_CHARS = 40
# the languages a translation may be written in: the official EU languages besides English, and
# the languages of associated countries that langdetect recognises (a translation bridges only a
# question detected as its language or a neighbour): Norwegian, Ukrainian, Turkish, Albanian,
# Macedonian, Hebrew
EU_LANGUAGES = "bg cs da de el es et fi fr ga hr hu it lt lv mt nl pl pt ro sk sl sv".split()
ASSOCIATED_LANGUAGES = "no uk tr sq mk he".split()
LANGUAGES = frozenset(EU_LANGUAGES + ASSOCIATED_LANGUAGES)
# languages langdetect takes for one another (3-7 % of the tuning questions): a question is
# looked up in the words of its language's whole group
NEIGHBOURS = tuple(frozenset(group.split()) for group in ("da no sv", "cs sk", "hr sl", "bg mk"))
# a neighbour's shorter words are often everyday words of the question's language: Swedish "värt"
# (worth) is Norwegian "vårt" (our) once accents are folded
NEIGHBOUR_MIN_LETTERS = 6
_ENTRY = re.compile(r"^-\s+(?P<term>[^:]+?)\s*:\s*(?P<meanings>.*?)\s*$")
_TRANSLATION = re.compile(r"^-\s+(?P<english>[^:=]+?)\s*=\s*(?P<languages>.*?)\s*$")
_NOT_WORD = re.compile(r"[^\w*]+|_+")  # a `*` is kept: the wildcard of translations
# after a term: it counts only as written ("FAIR" data, not "is it fair"; "CA", not "ca. 6 months")
AS_WRITTEN = "(as written)"


@dataclass(frozen=True)
class GlossaryEntry:
    """A term people type and what it means, e.g. `NDA` -> `non-disclosure agreement`."""

    term: str
    meanings: tuple[str, ...]
    line: int = 0
    as_written: bool = False  # an everyday word in other cases: matched only in the term's case


@dataclass(frozen=True)
class Translation:
    """An English term and its words in one language, e.g. `patent` <- German `Patent*`."""

    english: str
    language: str
    words: tuple[str, ...]
    line: int = 0

    def pattern(self, min_letters: int = 0) -> re.Pattern[str] | None:
        """A regular expression over `folded` text for the words of at least `min_letters`
        letters (None if none has); a word's trailing `*` is any ending."""
        words = []
        for word in self.words:
            plain = folded(word)
            if len(plain.replace("*", "").replace(" ", "")) >= min_letters:
                words.append(" ".join(_word_part(part) for part in plain.split()))
        return re.compile(rf"(?<!\w)(?:{'|'.join(words)})(?!\w)") if words else None


def folded(text: str) -> str:
    """Lower case, no accents, words separated by single spaces (a `*` survives): the form in
    which questions and translations are compared, so "Propriété" matches "propriete"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_NOT_WORD.sub(" ", plain).split())


def _word_part(part: str) -> str:
    return re.escape(part.rstrip("*")) + (r"\w*" if part.endswith("*") else "")


_Lookup = tuple[re.Pattern[str] | None, re.Pattern[str] | None, str]


@dataclass(frozen=True)
class Glossary:
    """All entries, matched case-insensitively as whole words (a plural 's' allowed), and the
    translations of core terms, matched without case or accents."""

    entries: tuple[GlossaryEntry, ...] = ()
    translations: tuple[Translation, ...] = ()
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _by_term: dict[str, GlossaryEntry] = field(default_factory=dict, compare=False, repr=False)
    # per language: (its pattern, its pattern for neighbours' questions, the English term)
    _by_language: dict[str, list[_Lookup]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls, entries: tuple[GlossaryEntry, ...], translations: tuple[Translation, ...] = ()
    ) -> Glossary:
        by_language: dict[str, list[_Lookup]] = {}
        for t in translations:
            lookup = (t.pattern(), t.pattern(NEIGHBOUR_MIN_LETTERS), t.english)
            by_language.setdefault(t.language, []).append(lookup)
        if not entries:
            return cls((), translations, _by_language=by_language)
        terms = sorted((e.term for e in entries), key=len, reverse=True)
        alternatives = "|".join(re.escape(t) for t in terms)
        pattern = re.compile(rf"(?<![\w-])({alternatives})s?(?![\w-])", re.I)
        return cls(
            entries, translations, pattern, {e.term.lower(): e for e in entries}, by_language
        )

    def english_terms(self, question: str, language: str) -> list[str]:
        """The English terms whose words in `language` (or a neighbour) the question uses, in
        glossary order.

        A question taken for Danish may well be Norwegian or Swedish, so the neighbours' longer
        words count too; a language without translations, nor neighbours with any, is looked up
        in all.
        """
        group = next((g for g in NEIGHBOURS if language in g), frozenset()) - {language}
        own = [(p, e) for p, _, e in self._by_language.get(language, [])]
        near = [(n, e) for lang in sorted(group) for _, n, e in self._by_language.get(lang, [])]
        pairs = own + near or [
            (p, e) for lookups in self._by_language.values() for p, _, e in lookups
        ]
        text = folded(question)
        found = {english for pattern, english in pairs if pattern and pattern.search(text)}
        return [e for e in dict.fromkeys(t.english for t in self.translations) if e in found]

    def matches(self, question: str) -> list[GlossaryEntry]:
        """Entries whose term the question uses and whose meaning it does not already spell out."""
        if self._pattern is None:
            return []
        found: list[GlossaryEntry] = []
        lowered = question.lower()
        for match in self._pattern.finditer(question):
            entry = self._by_term[match.group(1).lower()]
            if entry.as_written and match.group(1) not in (entry.term, entry.term.upper()):
                continue
            spelled_out = any(m.lower() in lowered for m in entry.meanings)
            if entry not in found and not spelled_out:
                found.append(entry)
        return found

    def expand(self, question: str, entries: list[GlossaryEntry] | None = None) -> str:
        """The question followed by the meanings of its terms (or of `entries`), in parentheses.

        The user's words come first and unchanged, so a long question keeps its own detail;
        a question that is only an acronym is searched by its meaning.
        """
        found = self.matches(question) if entries is None else entries
        meanings = list(dict.fromkeys(m for e in found for m in e.meanings))
        return f"{question} ({'; '.join(meanings)})" if meanings else question


def parse_glossary(text: str) -> tuple[Glossary, list[tuple[int, str]]]:
    """Entries from `- TERM: meaning; other meaning` lines and translations from
    `- english = de: Wort*, Wort; fr: mot*` lines, with (line, message) problems."""
    entries: list[GlossaryEntry] = []
    translations: list[Translation] = []
    problems: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _TRANSLATION.match(line):
            found, line_problems = _translations(line, number)
            translations += found
            problems += [(number, p) for p in line_problems]
            continue
        entry, problem = _entry(line, number)
        if problem:
            problems.append((number, problem))
            continue
        assert entry is not None
        key = entry.term.lower()
        if key in first_line:
            problems.append(
                (number, f"'{entry.term}' is already defined on line {first_line[key]}")
            )
            continue
        first_line[key] = number
        entries.append(entry)
    problems += _repeated_words(translations)
    return Glossary.of(tuple(entries), tuple(translations)), sorted(problems)


def _translations(line: str, number: int) -> tuple[list[Translation], list[str]]:
    """One English term's translations; each language once, each word well formed."""
    match = _TRANSLATION.match(line)
    assert match is not None
    english = match["english"].strip()
    found: list[Translation] = []
    problems: list[str] = []
    for part in (p.strip() for p in match["languages"].split(";") if p.strip()):
        language, _, words_text = part.partition(":")
        language = language.strip().lower()
        words = tuple(w.strip() for w in words_text.split(",") if w.strip())
        if language not in LANGUAGES:
            problems.append(
                f"'{language}' is not the code of an official EU language but English, nor of "
                f"{', '.join(ASSOCIATED_LANGUAGES)}"
            )
        elif any(t.language == language for t in found):
            problems.append(f"'{language}' appears twice for '{english}'")
        elif not words:
            problems.append(f"no words after '{language}:' for '{english}'")
        else:
            problems += [f"'{w}': {p}" for w in words if (p := _word_problem(w))]
            found.append(Translation(english, language, words, number))
    if not found and not problems:
        problems.append(f"'{english}' has no translations after the '='")
    return found, problems


def _word_problem(word: str) -> str | None:
    if len(word) > MAX_TERM_CHARS:
        return f"too long ({len(word)} characters, at most {MAX_TERM_CHARS})"
    if any("*" in part.rstrip("*") for part in folded(word).split()):
        return "'*' may only end a word"
    if len(folded(word).replace("*", "").replace(" ", "")) < 2:
        return "needs at least two letters"
    return None


def _repeated_words(translations: list[Translation]) -> list[tuple[int, str]]:
    """A word of one language given for two English terms: one meaning a word, or BM25 gets
    both every time."""
    seen: dict[tuple[str, str], Translation] = {}
    problems = []
    for t in translations:
        for word in t.words:
            key = (t.language, folded(word))
            first = seen.setdefault(key, t)
            if first is not t:
                problems.append(
                    (
                        t.line,
                        f"'{word}' ({t.language}) already means '{first.english}' "
                        f"on line {first.line}",
                    )
                )
    return problems


def _entry(line: str, number: int) -> tuple[GlossaryEntry | None, str | None]:
    match = _ENTRY.match(line)
    if not match:
        return None, "expected '- TERM: meaning; other meaning' (or a '#' heading)"
    term = match["term"].strip()
    as_written = term.endswith(AS_WRITTEN)
    term = term.removesuffix(AS_WRITTEN).strip()
    meanings = tuple(m.strip() for m in match["meanings"].split(";") if m.strip())
    if len(term) > MAX_TERM_CHARS:
        return None, f"term too long ({len(term)} characters, at most {MAX_TERM_CHARS})"
    if not re.search(r"\w", term):
        return None, "the term must contain a letter or digit"
    if not meanings:
        return None, f"'{term}' has no meaning after the colon"
    return GlossaryEntry(term, meanings, number, as_written), None
