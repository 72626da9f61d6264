"""The corpus model and its Markdown files: loading, validating and hashing passages and updates.

Moderators edit plain Markdown; this module is the one place that reads it, so every other
part of ipbot works with typed, validated objects and every mistake is reported as
`file:line: message`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import difflib
import functools
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml

from retrieval.glossary import Glossary, parse_glossary
from retrieval.scope import SCOPE_FILE, EvalSet, line_of, parse_eval_set

AREA_PREFIXES: dict[str, str] = {
    "intellectual-assets-management": "IAM",
    "new-technologies": "NT",
    "open-innovation": "OI",
    "open-science": "OS",
    "awareness-raising": "AW",
    "international-cooperation": "INT",
    "skills-and-training": "SK",
    "valuation": "VAL",
    "industry-academia": "JIA",
}
AREA_SLUGS: tuple[str, ...] = tuple(AREA_PREFIXES)
GLOSSARY_FILE = "glossary.md"
ASKED_FILE = "highlights.yaml"  # per sentence, the questions it answers (see _load_asked)
MAX_ASKED_CHARS = 300
NOT_AREA_FILES = ("readme.md", GLOSSARY_FILE)
DRAFTS_DIR = "drafts"  # accepted suggestions; never loaded: only top-level *.md are areas
Kind = Literal["recommendation", "example", "definition"]
KINDS: tuple[str, ...] = ("recommendation", "example", "definition")
MIN_WORDS, MAX_WORDS = 40, 150
REQUIRED_FIELDS = ("kind", "source", "url")
KNOWN_FIELDS = (*REQUIRED_FIELDS, "keywords", "checked", "country")
STALE_AFTER_DAYS = 365
# hosts (and their subdomains) that serve copies of other publishers' documents: a copy may be
# altered or outdated, and readers should land on the page that is authoritative
MIRROR_HOSTS = (
    "archive.org",
    "archive.ph",
    "archive.is",
    "archive.today",
    "scribd.com",
    "docplayer.net",
    "studocu.com",
    "yumpu.com",
    "pdfcoffee.com",
    "dokumen.pub",
    "dokumen.tips",
    "researchgate.net",
    "academia.edu",
    "semanticscholar.org",
    "translate.goog",
    "webcache.googleusercontent.com",
)

_HEADING = re.compile(r"^##\s+(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]*)\s*:\s*(?P<title>.*\S)\s*$")
_FIELD = re.compile(r"^(?P<key>[a-z_]+)\s*:\s*(?P<value>.*?)\s*$")
_DATE_VALUE = re.compile(r"^\s*[\w-]+\s*:\s*['\"]?(\d{4}-\d{2}-\d{2})\b")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_URL = re.compile(r"^https?://[^\s/]+\.[^\s]+$")
# a Markdown heading (`# Title`, `### Notes`) or one missing its space (`##Notes`); a single
# `#word` is left alone: in running text it is a hashtag, not a heading
_INNER_HEADING = re.compile(r"^ {0,3}(?:#{1,6}(?:\s|$)|#{2,6}[^#\s])")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[A-Z0-9\"'(“‘])")
_ABBREVIATION_END = re.compile(
    r"\b(?:e\.g|i\.e|etc|Art|No|cf|vs|approx|Dr|St|pp?|para|ed)\.$", re.I
)


@dataclass(frozen=True)
class Area:
    """One of the nine areas of the Code of Practice."""

    slug: str
    title: str
    description: str


@dataclass(frozen=True)
class Passage:
    """A citable unit of the corpus: what a user reads in one answer."""

    id: str
    area: str
    kind: Kind
    title: str
    text: str
    citation: str
    url: str
    keywords: tuple[str, ...] = ()
    checked: dt.date | None = None
    # for a passage that holds in one country only (its law, a national scheme): the names
    # people give that country; see `names_country`
    country: tuple[str, ...] = ()
    file: str = ""
    line: int = 0
    # per sentence, questions people ask that it answers (corpus/highlights.yaml): a question
    # is nearer in meaning to another question than to the sentence that answers it
    asked: tuple[tuple[str, ...], ...] = ()

    @functools.cached_property
    def sentences(self) -> tuple[str, ...]:
        """The text split into sentences, for highlighting the one that answers the question
        (split once: every answer reads them)."""
        return tuple(split_sentences(self.text))

    @property
    def search_text(self) -> str:
        """The text that is embedded and indexed: title, body and moderator keywords."""
        parts = [self.title + ".", self.text]
        if self.keywords:
            parts.append("(" + ", ".join(self.keywords) + ")")
        return " ".join(parts)


@dataclass(frozen=True)
class Update:
    """A dated dissemination update that subscribers receive."""

    id: str
    date: dt.date
    title: str
    body: str
    url: str
    areas: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a corpus file, located for the person who will fix it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Corpus:
    """The validated knowledge base: areas, passages and updates, with a content hash."""

    areas: tuple[Area, ...]
    passages: tuple[Passage, ...]
    updates: tuple[Update, ...] = ()
    glossary: Glossary = field(default_factory=Glossary)
    scope: EvalSet = field(default_factory=lambda: EvalSet((), ()))  # the scope model's examples
    version: str = "unversioned"
    hash: str = ""
    by_id: dict[str, Passage] = field(default_factory=dict, compare=False, repr=False)

    def area(self, slug: str) -> Area:
        """The area with this slug (the slug must be valid)."""
        return next(a for a in self.areas if a.slug == slug)

    def passages_in(self, slug: str) -> list[Passage]:
        return [p for p in self.passages if p.area == slug]


class CorpusError(Exception):
    """The corpus has problems; each is listed so a moderator can fix them in one pass."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(
            f"the corpus has {len(problems)} problem(s); first: {problems[0]}"
            if problems
            else "the corpus is invalid"
        )


def split_sentences(text: str) -> list[str]:
    """Sentences of a text, keeping abbreviations such as 'e.g.' and 'Art.' intact."""
    sentences: list[str] = []
    for piece in _SENTENCE_END.split(text):
        if sentences and _ABBREVIATION_END.search(sentences[-1]):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return [s.strip() for s in sentences if s.strip()] or [text]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_corpus(corpus_dir: Path) -> Corpus:
    """Read and validate every area file and update; raise CorpusError listing all problems."""
    corpus, problems = check_corpus(corpus_dir)
    if problems:
        raise CorpusError(problems)
    return corpus


def corpus_version(corpus_dir: Path) -> str:
    """The moderators' version label in `VERSION`, readable without loading the corpus (an
    unreadable one is reported by `check_corpus`)."""
    return _version(Path(corpus_dir))[0]


def _version(corpus_dir: Path) -> tuple[str, list[Problem]]:
    """The label in `VERSION` ("unversioned" without one), and why it cannot be read."""
    version_file = corpus_dir / "VERSION"
    if not version_file.exists():
        return "unversioned", []
    text, problems = _read_text(version_file)
    return (text.strip() if text is not None else "unreadable"), problems


def check_corpus(corpus_dir: Path) -> tuple[Corpus, list[Problem]]:
    """Parse the corpus, collecting problems instead of stopping at the first one."""
    corpus_dir = Path(corpus_dir)
    problems: list[Problem] = []
    if not corpus_dir.is_dir():
        return Corpus((), ()), [Problem(str(corpus_dir), 0, "corpus folder not found")]
    areas: list[Area] = []
    passages: list[Passage] = []
    for path in sorted(corpus_dir.glob("*.md")):
        if path.name.lower() in NOT_AREA_FILES:
            continue
        area, found, file_problems = _parse_area_file(path)
        problems += file_problems
        if area:
            areas.append(area)
            passages += found
    problems += _check_cross_file(corpus_dir, areas, passages)
    updates, update_problems = _load_updates(corpus_dir / "updates")
    problems += update_problems
    glossary, glossary_problems = _load_glossary(corpus_dir / GLOSSARY_FILE)
    problems += glossary_problems
    problems += _unknown_english_terms(corpus_dir / GLOSSARY_FILE, glossary, passages)
    named = _named_in_headings(corpus_dir)
    scope, scope_problems = _load_scope(corpus_dir / SCOPE_FILE, passages, named)
    problems += scope_problems
    passages, asked_problems = _load_asked(corpus_dir / ASKED_FILE, passages, named)
    problems += asked_problems
    version, version_problems = _version(corpus_dir)
    problems += version_problems
    areas.sort(key=lambda a: AREA_SLUGS.index(a.slug))
    corpus = Corpus(
        areas=tuple(areas),
        passages=tuple(passages),
        updates=tuple(updates),
        glossary=glossary,
        scope=scope,
        version=version,
        hash=_corpus_hash(passages, areas, scope, glossary),
        by_id={p.id: p for p in passages},
    )
    return corpus, problems


def stale_passages(
    corpus: Corpus, max_age_days: int = STALE_AFTER_DAYS, today: dt.date | None = None
) -> list[Problem]:
    """Warnings (not errors) for passages whose `checked:` date is older than `max_age_days`.

    Dated facts (yearly amounts, services that may close) need a moderator to look again; the
    passage stays valid meanwhile, so this never blocks publishing.
    """
    today = today or dt.date.today()
    return [
        Problem(
            p.file,
            p.line,
            f"{p.id}: last checked {p.checked.isoformat()}, {(today - p.checked).days} days ago; "
            "check the facts against the source and update the checked: date",
        )
        for p in corpus.passages
        if p.checked is not None and (today - p.checked).days > max_age_days
    ]


def _corpus_hash(
    passages: list[Passage], areas: list[Area], scope: EvalSet, glossary: Glossary
) -> str:
    """What the index is built from: scope examples and questions asked are embedded as the
    glossary widens them, so an edit to any of these makes the index stale."""
    digest = hashlib.sha256()
    texts, labels = scope.examples()  # the scope model is trained with the index
    for text, label in zip(texts, labels, strict=True):
        digest.update(f"{label:.0f}\0{text}\n".encode())
    for entry in glossary.entries:
        digest.update(f"{entry.term}\0{';'.join(entry.meanings)}\n".encode())
    for area in sorted(areas, key=lambda a: a.slug):
        digest.update(f"{area.slug}\0{area.title}\0{area.description}\n".encode())
    for p in passages:
        fields = (
            *(p.id, p.area, p.kind, p.title, p.text, p.citation, p.url),
            *(",".join(p.keywords), ",".join(p.country)),
        )
        asked = "\0".join("\1".join(questions) for questions in p.asked)
        digest.update(("\0".join(fields) + "\2" + asked + "\n").encode())
    return digest.hexdigest()


def _check_cross_file(
    corpus_dir: Path, areas: list[Area], passages: list[Passage]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, Passage] = {}
    for p in passages:
        if p.id in seen:
            first = seen[p.id]
            problems.append(
                Problem(
                    p.file, p.line, f"duplicate ID {p.id} (first used at {first.file}:{first.line})"
                )
            )
        else:
            seen[p.id] = p
    slugs_seen: dict[str, str] = {}
    for area in areas:
        if area.slug in slugs_seen:
            problems.append(Problem(str(corpus_dir), 0, f"area {area.slug} is defined twice"))
        slugs_seen[area.slug] = area.slug
    if not passages:
        problems.append(Problem(str(corpus_dir), 0, "the corpus has no passages"))
    return problems


def _split_front_matter(lines: list[str], path: str) -> tuple[dict | None, int, list[Problem]]:
    """Return the front-matter mapping and the index of the first body line."""
    if not lines or lines[0].strip() != "---":
        return None, 0, [Problem(path, 1, "missing front matter: the file must start with '---'")]
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return None, 0, [Problem(path, 1, "malformed front matter: no closing '---'")]
    try:
        data = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = 2 + mark.line if mark else 1
        return None, 0, [Problem(path, line, f"malformed front matter: {exc}")]
    except ValueError as exc:  # YAML reads 2023-02-30 as a date, which does not exist
        line = _impossible_date_line(lines[1:end])
        return None, 0, [Problem(path, line, f"impossible date in front matter: {exc}")]
    if not isinstance(data, dict):
        return None, 0, [Problem(path, 2, "malformed front matter: expected key: value lines")]
    return data, end + 1, []


def _impossible_date_line(front_matter: list[str]) -> int:
    """The file line of the first date-shaped value that is not a real date (else line 2)."""
    for number, line in enumerate(front_matter, start=2):
        found = _DATE_VALUE.match(line)
        if found:
            try:
                dt.date.fromisoformat(found.group(1))
            except ValueError:
                return number
    return 2


def _read_lines(path: Path) -> tuple[list[str], list[Problem]]:
    """The file's lines, or a problem (see `_read_text`)."""
    text, problems = _read_text(path)
    return (text.splitlines() if text is not None else []), problems


def _read_text(path: Path) -> tuple[str | None, list[Problem]]:
    """A corpus file's text, or a problem instead of an exception: a byte that is not UTF-8
    (at its line), or no readable file (a folder named like one, a broken or looping link).

    A leading byte-order mark is dropped, not decoded: it would hide the first line's `---`
    or key, and counting lines after it keeps the located byte where the editor shows it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, [Problem(str(path), 0, f"cannot be read ({reason}); it must be a text file")]
    data = data.removeprefix(codecs.BOM_UTF8)  # Windows editors write one; it is no text
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        message = f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        return None, [Problem(str(path), line, message)]


def check_draft(path: Path, corpus: Corpus, replaces: str | None = None) -> list[Problem]:
    """A draft passage file's problems: the corpus rules, and an ID nobody uses yet (unless
    the draft corrects the passage with that ID)."""
    _area, passages, problems = _parse_area_file(path, draft=True)
    for passage in passages:
        taken = corpus.by_id.get(passage.id)
        if taken is not None and passage.id != replaces:
            where = f"{Path(taken.file).name}:{taken.line}"
            problems.append(
                Problem(str(path), passage.line, f"duplicate ID {passage.id} ({where})")
            )
    return problems


def _parse_area_file(
    path: Path, draft: bool = False
) -> tuple[Area | None, list[Passage], list[Problem]]:
    name = str(path)
    lines, problems = _read_lines(path)
    if problems:
        return None, [], problems
    meta, body_start, problems = _split_front_matter(lines, name)
    if meta is None:
        return None, [], problems
    area, problems = _area_from_front_matter(meta, path, named_by_slug=not draft)
    if area is None:
        return None, [], problems
    passages, passage_problems = _parse_passages(lines, body_start, area.slug, name)
    return area, passages, problems + passage_problems


def _area_from_front_matter(
    meta: dict, path: Path, named_by_slug: bool = True
) -> tuple[Area | None, list[Problem]]:
    name = str(path)
    problems = [
        Problem(name, 2, f"malformed front matter: '{key}' is missing")
        for key in ("slug", "title", "description")
        if not str(meta.get(key) or "").strip()
    ]
    if problems:
        return None, problems
    slug = str(meta["slug"]).strip()
    if slug not in AREA_PREFIXES:
        return None, [
            Problem(name, 2, f"unknown area '{slug}'; expected one of: {', '.join(AREA_SLUGS)}")
        ]
    if named_by_slug and path.stem != slug:
        problems.append(Problem(name, 2, f"file name should be {slug}.md to match its slug"))
    area = Area(slug, str(meta["title"]).strip(), " ".join(str(meta["description"]).split()))
    return area, problems


def _parse_passages(
    lines: list[str], start: int, area: str, path: str
) -> tuple[list[Passage], list[Problem]]:
    passages: list[Passage] = []
    problems: list[Problem] = []
    sections = _sections(lines, start, path, problems)
    for line_no, heading, body in sections:
        passage, section_problems = _passage_from_section(line_no, heading, body, area, path)
        problems += section_problems
        if passage:
            passages.append(passage)
    return passages, problems


def _sections(
    lines: list[str], start: int, path: str, problems: list[Problem]
) -> list[tuple[int, re.Match[str], list[tuple[int, str]]]]:
    """Split the body at `## ID: Title` headings; text before the first heading is an error."""
    sections: list[tuple[int, re.Match[str], list[tuple[int, str]]]] = []
    for index in range(start, len(lines)):
        line, line_no = lines[index], index + 1
        if line.startswith("## "):
            match = _HEADING.match(line)
            if not match:
                problems.append(
                    Problem(
                        path,
                        line_no,
                        "malformed heading: expected '## ID: Title'; "
                        "passages cannot contain other headings",
                    )
                )
                sections.append((line_no, None, []))  # type: ignore[arg-type]
                continue
            sections.append((line_no, match, []))
        elif sections:
            sections[-1][2].append((line_no, line))
        elif line.strip():
            problems.append(
                Problem(path, line_no, "text outside a passage: start with '## ID: Title'")
            )
    return [s for s in sections if s[1] is not None]


def _passage_from_section(
    line_no: int, heading: re.Match[str], body: list[tuple[int, str]], area: str, path: str
) -> tuple[Passage | None, list[Problem]]:
    located, text_lines, problems = _fields_and_text(body, heading["id"], path)
    fields = {key: value for key, (_, value) in located.items()}
    problems += _headings_inside(body, area, path)
    problems += _check_fields(fields, line_no, heading["id"], area, path)
    if "url" in located:
        url_line, url = located["url"]
        problems += [
            Problem(path, url_line, f"{heading['id']}: {message}") for message in _url_problems(url)
        ]
    text = " ".join(" ".join(text_lines).split())
    problems += _check_text(text, line_no, path)
    if problems:
        return None, problems
    keywords = _listed(fields.get("keywords", ""))
    country = _listed(fields.get("country", ""))
    if "country" in fields and not country:
        return None, [Problem(path, line_no, f"{heading['id']}: country: names no country")]
    checked, problems = _checked_date(fields.get("checked"), line_no, heading["id"], path)
    if problems:
        return None, problems
    passage = Passage(
        id=heading["id"],
        area=area,
        kind=fields["kind"],  # type: ignore[arg-type]
        title=heading["title"].strip(),
        text=text,
        citation=fields["source"],
        url=fields["url"],
        keywords=keywords,
        checked=checked,
        country=country,
        file=path,
        line=line_no,
    )
    return passage, []


def _fields_and_text(
    body: list[tuple[int, str]], passage_id: str, path: str
) -> tuple[dict[str, tuple[int, str]], list[str], list[Problem]]:
    """The `key: value` lines, each with its line number, and the text lines after them.

    A field given twice is a problem: keeping one silently would cite a source or match
    keywords the moderator meant to replace.
    """
    fields: dict[str, tuple[int, str]] = {}
    problems: list[Problem] = []
    text_lines: list[str] = []
    in_fields = True
    for number, line in body:
        if in_fields and not line.strip():
            if fields:
                in_fields = False
            continue
        match = _FIELD.match(line) if in_fields else None
        if match and match["key"] in KNOWN_FIELDS:
            key = match["key"]
            if key in fields:
                first = fields[key][0]
                message = f"{passage_id}: field '{key}' is given twice (first on line {first})"
                problems.append(Problem(path, number, message + "; keep one"))
            else:
                fields[key] = (number, match["value"])
            continue
        if in_fields and match:
            close = difflib.get_close_matches(match["key"], KNOWN_FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(Problem(path, number, f"unknown field '{match['key']}'{hint}"))
            continue
        in_fields = False
        text_lines.append(line)
    return fields, text_lines, problems


def _headings_inside(body: list[tuple[int, str]], area: str, path: str) -> list[Problem]:
    """Headings in a passage: chat shows the text as plain sentences, and a heading meant to
    start the next passage would otherwise merge both into one."""
    problems = []
    for number, line in body:
        if not _INNER_HEADING.match(line):
            continue
        message = (
            f"a heading inside a passage ('{line.strip()}'): passages cannot contain headings; "
            "a new passage starts with '## ID: Title'"
        )
        meant = _HEADING.match("## " + line.strip().lstrip("#").lstrip())
        if meant and meant["id"].startswith(AREA_PREFIXES[area] + "-"):  # a '#' or space amiss
            message += f" (here: '## {meant['id']}: {meant['title']}')"
        problems.append(Problem(path, number, message))
    return problems


def _url_problems(url: str) -> list[str]:
    """Why a well-formed URL is no authoritative source: plain http can be altered on the way
    and may not be the publisher's canonical page; a mirror's copy may differ from the
    original (the shape of the URL is checked in `_check_fields`)."""
    if not _URL.match(url):
        return []
    if url.lower().startswith("http://"):
        return ["URL must start with https://, not http://: cite the authoritative page over https"]
    host = (urlsplit(url).hostname or "").lower()
    mirror = next((m for m in MIRROR_HOSTS if host == m or host.endswith("." + m)), None)
    if mirror:
        return [f"{host} is a mirror or aggregator: cite the publisher's own page, not a copy"]
    return []


def _listed(value: str) -> tuple[str, ...]:
    """The items of a comma-separated field."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def names_country(question: str, passage: Passage) -> bool:
    """Whether a question names the one country a passage holds in (any of its `country:`
    names, as a word or the start of one: "German" finds "Germany" and "German's")."""
    if not passage.country or _word_starts(question).isdisjoint(_name_starts(passage.country)):
        return False  # most questions: no word even starts like one of the names
    return _country_pattern(passage.country).search(question) is not None


@functools.lru_cache(maxsize=1024)
def _country_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for all of a passage's names: ranking asks of every question (a search per
    name cost 0.4 ms a question, a sixth of the model's time)."""
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, names)) + ")", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _name_starts(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(name.lower()[:3] for name in names)


@functools.lru_cache(maxsize=4096)
def _word_starts(text: str) -> frozenset[str]:
    """The first one, two and three letters of each word, lower-case: a quick test before the
    pattern, since every question meets the few passages bound to one country."""
    words = re.findall(r"\w+", text.lower())
    return frozenset(word[:n] for word in words for n in (1, 2, 3))


def _check_fields(
    fields: dict[str, str], line_no: int, passage_id: str, area: str, path: str
) -> list[Problem]:
    problems = [
        Problem(
            path,
            line_no,
            f"{passage_id}: missing {'citation (source)' if key == 'source' else key}",
        )
        for key in REQUIRED_FIELDS
        if not fields.get(key)
    ]
    kind = fields.get("kind")
    if kind and kind not in KINDS:
        problems.append(
            Problem(
                path,
                line_no,
                f"{passage_id}: unknown kind '{kind}'; expected one of: {', '.join(KINDS)}",
            )
        )
    url = fields.get("url")
    if url and not _URL.match(url):
        problems.append(
            Problem(path, line_no, f"{passage_id}: URL must be a web address starting with https://")
        )
    prefix = AREA_PREFIXES[area] + "-"
    if not passage_id.startswith(prefix):
        problems.append(
            Problem(path, line_no, f"{passage_id}: IDs in this area start with '{prefix}'")
        )
    return problems


def _checked_date(
    value: str | None, line_no: int, passage_id: str, path: str
) -> tuple[dt.date | None, list[Problem]]:
    """The `checked:` date, when the facts were last verified against the source."""
    if value is None:
        return None, []
    try:
        if not _ISO_DATE.match(value):
            raise ValueError(value)
        checked = dt.date.fromisoformat(value)
    except ValueError:
        message = f"{passage_id}: checked date must be written YYYY-MM-DD, not '{value}'"
        return None, [Problem(path, line_no, message)]
    if checked > dt.date.today():
        return None, [
            Problem(path, line_no, f"{passage_id}: checked date {value} is in the future")
        ]
    return checked, []


def _check_text(text: str, line_no: int, path: str) -> list[Problem]:
    words = len(text.split())
    if words == 0:
        return [Problem(path, line_no, "empty text")]
    if words > MAX_WORDS:
        return [Problem(path, line_no, f"text too long: {words} words (at most {MAX_WORDS})")]
    if words < MIN_WORDS:
        return [Problem(path, line_no, f"text too short: {words} words (at least {MIN_WORDS})")]
    return []


def _load_glossary(path: Path) -> tuple[Glossary, list[Problem]]:
    """The optional glossary; its problems are located like any other corpus problem."""
    if not path.exists():
        return Glossary(), []
    text, unreadable = _read_text(path)
    if text is None:
        return Glossary(), unreadable
    glossary, problems = parse_glossary(text)
    return glossary, [Problem(str(path), line, message) for line, message in problems]


def _unknown_english_terms(
    path: Path, glossary: Glossary, passages: list[Passage]
) -> list[Problem]:
    """A translation bridges to English words for BM25: a word no passage uses finds nothing."""
    used = set(re.findall(r"\w+", " ".join(p.search_text.lower() for p in passages)))
    problems = []
    for english, line in dict.fromkeys((t.english, t.line) for t in glossary.translations):
        unknown = [w for w in re.findall(r"\w+", english.lower()) if w not in used]
        if unknown:
            problems.append(
                Problem(str(path), line, f"no passage uses {', '.join(unknown)} ('{english}')")
            )
    return problems


def _named_in_headings(corpus_dir: Path) -> frozenset[str]:
    """The IDs of well-formed passage headings, valid passages or not: a passage with a problem
    of its own (a field typo) is reported there, not again by every file that names it."""
    named: set[str] = set()
    for path in corpus_dir.glob("*.md"):
        if path.name.lower() in NOT_AREA_FILES:
            continue
        text, _ = _read_text(path)
        named.update(m["id"] for line in (text or "").splitlines() if (m := _HEADING.match(line)))
    return frozenset(named)


def _load_scope(
    path: Path, passages: list[Passage], named: frozenset[str] = frozenset()
) -> tuple[EvalSet, list[Problem]]:
    """The optional scope examples; a passage id or area they name must exist (`named`: the
    IDs of passages reported invalid, which do)."""
    if not path.exists():
        return EvalSet((), ()), []
    text, unreadable = _read_text(path)
    if text is None:
        return EvalSet((), ()), unreadable
    scope, found = parse_eval_set(text)
    problems = [Problem(str(path), line, message) for line, message in found]
    ids = {p.id for p in passages} | named
    for question in scope.questions:
        unknown = [i for i in question.expected if i not in ids]
        wrong_area = question.area and question.area not in AREA_PREFIXES
        if unknown or wrong_area:
            line = line_of(text, question.question)
            what = (
                f"unknown passage ID {unknown[0]}" if unknown else f"unknown area '{question.area}'"
            )
            problems.append(Problem(str(path), line, f"{what} for '{question.question}'"))
    return scope, problems


def _load_asked(
    path: Path, passages: list[Passage], named: frozenset[str] = frozenset()
) -> tuple[list[Passage], list[Problem]]:
    """The passages with the questions their sentences answer, from the optional file.

    The file maps a passage ID to the first words of each sentence and that sentence's
    questions, so that editing one sentence leaves the others' questions in place. A sentence
    start that no longer begins exactly one sentence of its passage is reported.
    """
    if not path.exists():
        return passages, []
    name = str(path)
    text, unreadable = _read_text(path)
    if text is None:
        return passages, unreadable
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return passages, [Problem(name, mark.line + 1 if mark else 0, f"malformed YAML: {exc}")]
    if not isinstance(data, dict):
        return passages, [Problem(name, 1, "expected passage IDs, each with sentence starts")]
    by_id = {p.id: p for p in passages}
    problems: list[Problem] = []
    asked: dict[str, tuple[tuple[str, ...], ...]] = {}
    for passage_id, starts in data.items():
        line = line_of(text, f"{passage_id}:")
        passage = by_id.get(str(passage_id))
        if passage is None:
            if str(passage_id) not in named:  # else its own problem is reported
                problems.append(Problem(name, line, f"unknown passage ID {passage_id}"))
            continue
        found, found_problems = _asked_of(passage, starts)
        problems += [Problem(name, line, f"{passage_id}: {message}") for message in found_problems]
        asked[passage.id] = found
    return [replace(p, asked=asked[p.id]) if p.id in asked else p for p in passages], problems


def _asked_of(passage: Passage, starts: object) -> tuple[tuple[tuple[str, ...], ...], list[str]]:
    """Per sentence of the passage, the questions listed under its first words."""
    if not isinstance(starts, dict):
        return (), ["expected the first words of a sentence, each with a list of questions"]
    problems: list[str] = []
    questions: list[list[str]] = [[] for _ in passage.sentences]
    for start, listed in starts.items():
        opening = " ".join(str(start).split())
        matching = [i for i, s in enumerate(passage.sentences) if s.startswith(opening)]
        if len(matching) != 1:
            how = "no sentence" if not matching else f"{len(matching)} sentences"
            problems.append(f"'{opening}' starts {how} of the passage")
            continue
        good = isinstance(listed, list) and all(
            isinstance(q, str) and q.strip() and len(q) <= MAX_ASKED_CHARS for q in listed
        )
        if not good:
            problems.append(f"'{opening}': expected a list of questions, each one line")
            continue
        questions[matching[0]] += [" ".join(q.split()) for q in listed]
    return tuple(tuple(q) for q in questions), problems


def _load_updates(folder: Path) -> tuple[list[Update], list[Problem]]:
    updates: list[Update] = []
    problems: list[Problem] = []
    if not folder.is_dir():
        return updates, problems
    found: list[tuple[Path, Update]] = []
    for path in sorted(folder.glob("*.md")):
        update, file_problems = _parse_update(path)
        problems += file_problems
        if update:
            found.append((path, update))
    problems += _duplicate_updates(found)
    updates = sorted((update for _, update in found), key=lambda u: (u.date, u.id))
    return updates, problems


def _duplicate_updates(found: list[tuple[Path, Update]]) -> list[Problem]:
    """Updates are published by file name, so one update in two files (a copy saved under a
    new name) would reach every subscriber twice."""
    problems: list[Problem] = []
    by_title: dict[tuple[dt.date, str], Path] = {}
    by_body: dict[str, Path] = {}
    for path, update in found:
        title = (update.date, " ".join(update.title.casefold().split()))
        first, why = by_title.get(title), "same title and date"
        if first is None:
            first, why = by_body.get(update.body), "same text"
        if first is not None:
            message = f"the same update as {first.name} ({why}); keep one of the two files"
            problems.append(Problem(str(path), 1, message))
        by_title.setdefault(title, path)
        by_body.setdefault(update.body, path)
    return problems


def _parse_update(path: Path) -> tuple[Update | None, list[Problem]]:
    name = str(path)
    lines, problems = _read_lines(path)
    if problems:
        return None, problems
    meta, body_start, problems = _split_front_matter(lines, name)
    if meta is None:
        return None, problems
    for key in ("date", "title", "url", "areas"):
        if not str(meta.get(key) or "").strip():
            problems.append(Problem(name, 2, f"malformed front matter: '{key}' is missing"))
    date = meta.get("date")
    if date and (not isinstance(date, dt.date) or isinstance(date, dt.datetime)):
        problems.append(Problem(name, 2, "date must be written YYYY-MM-DD"))
    areas = _update_areas(meta.get("areas"))
    unknown = [a for a in areas if a not in AREA_PREFIXES]
    if unknown:
        problems.append(Problem(name, 2, f"unknown area '{unknown[0]}'"))
    url = str(meta.get("url") or "")
    if url and not _URL.match(url):
        problems.append(Problem(name, 2, "URL must be a web address starting with https://"))
    url_line = _key_line(lines[:body_start], "url")
    problems += [Problem(name, url_line, message) for message in _url_problems(url)]
    body = " ".join(" ".join(lines[body_start:]).split())
    if not body:
        problems.append(Problem(name, body_start + 1, "empty text"))
    if problems:
        return None, problems
    update = Update(path.stem, date, str(meta["title"]).strip(), body, url, areas)  # type: ignore[arg-type]
    return update, []


def _key_line(front_matter: list[str], key: str) -> int:
    """The file line where the front matter gives `key` (line 2, its first, if not found)."""
    return next(
        (n for n, line in enumerate(front_matter, start=1) if line.startswith(f"{key}:")), 2
    )


def _update_areas(value: object) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip().lower() == "all":
        return AREA_SLUGS
    items = value if isinstance(value, list) else str(value or "").split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())
