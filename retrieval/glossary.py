"""The moderators' glossary: acronyms and synonyms that widen a question before it is searched.

"MTA" alone shares no word with "material transfer agreement" and embeds as noise; writing the
meaning next to the user's own words lets both BM25 and the embedding find the passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_TERM_CHARS = 40
_ENTRY = re.compile(r"^-\s+(?P<term>[^:]+?)\s*:\s*(?P<meanings>.*?)\s*$")


@dataclass(frozen=True)
class GlossaryEntry:
    """A term people type and what it means, e.g. `NDA` -> `non-disclosure agreement`."""

    term: str
    meanings: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class Glossary:
    """All entries, matched case-insensitively as whole words (a plural 's' allowed)."""

    entries: tuple[GlossaryEntry, ...] = ()
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _by_term: dict[str, GlossaryEntry] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, entries: tuple[GlossaryEntry, ...]) -> Glossary:
        if not entries:
            return cls()
        terms = sorted((e.term for e in entries), key=len, reverse=True)
        alternatives = "|".join(re.escape(t) for t in terms)
        pattern = re.compile(rf"(?<![\w-])({alternatives})s?(?![\w-])", re.I)
        return cls(entries, pattern, {e.term.lower(): e for e in entries})

    def matches(self, question: str) -> list[GlossaryEntry]:
        """Entries whose term the question uses and whose meaning it does not already spell out."""
        if self._pattern is None:
            return []
        found: list[GlossaryEntry] = []
        lowered = question.lower()
        for match in self._pattern.finditer(question):
            entry = self._by_term[match.group(1).lower()]
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
    """Entries from `- TERM: meaning; other meaning` lines, with (line, message) problems."""
    entries: list[GlossaryEntry] = []
    problems: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
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
    return Glossary.of(tuple(entries)), problems


def _entry(line: str, number: int) -> tuple[GlossaryEntry | None, str | None]:
    match = _ENTRY.match(line)
    if not match:
        return None, "expected '- TERM: meaning; other meaning' (or a '#' heading)"
    term = match["term"].strip()
    meanings = tuple(m.strip() for m in match["meanings"].split(";") if m.strip())
    if len(term) > MAX_TERM_CHARS:
        return None, f"term too long ({len(term)} characters, at most {MAX_TERM_CHARS})"
    if not re.search(r"\w", term):
        return None, "the term must contain a letter or digit"
    if not meanings:
        return None, f"'{term}' has no meaning after the colon"
    return GlossaryEntry(term, meanings, number), None
