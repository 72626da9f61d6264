"""The corpus format: the shipped corpus is valid and complete, and every mistake is located."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from bot.cli import main
from retrieval.corpus import (
    AREA_SLUGS,
    check_corpus,
    load_corpus,
    names_country,
    stale_passages,
)
from retrieval.glossary import parse_glossary

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
MIRRORS = (
    "scribd",
    "pdfslide",
    "dokumen.tips",
    "fdocuments",
    "wikipedia",
    "zxc.wiki",
    "lawinsider",
)

PASSAGE = """
## {id}: {title}
kind: {kind}
source: Recommendation (EU) 2023/499, Code of Practice - IP valuation
url: https://eur-lex.europa.eu/eli/reco/2023/499/oj

{text}
"""
WORDS = " ".join(["Valuation helps research organisations decide how to protect an asset."] * 5)


def write_area(
    folder: Path, passages: str, slug: str = "valuation", front: str | None = None
) -> Path:
    front = (
        front
        if front is not None
        else f"---\nslug: {slug}\ntitle: IP valuation\ndescription: Worth.\n---\n"
    )
    path = folder / f"{slug}.md"
    path.write_text(front + passages)
    return path


def problems_in(folder: Path) -> list[str]:
    _, problems = check_corpus(folder)
    return [str(p) for p in problems]


def test_shipped_corpus_validates_with_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corpus", "validate"]) == 0
    assert "Corpus OK: 9 areas" in capsys.readouterr().out


def test_shipped_corpus_covers_every_area_with_enough_passages_and_examples() -> None:
    corpus = load_corpus(CORPUS)
    per_area = Counter(p.area for p in corpus.passages)
    examples = Counter(p.area for p in corpus.passages if p.kind == "example")
    assert [a.slug for a in corpus.areas] == list(AREA_SLUGS)
    assert len(corpus.passages) >= 180
    assert all(per_area[slug] >= 15 for slug in AREA_SLUGS), per_area
    assert all(examples[slug] >= 4 for slug in AREA_SLUGS), examples
    assert any(p.kind == "definition" for p in corpus.passages)


def test_every_passage_cites_an_authoritative_https_source() -> None:
    for passage in load_corpus(CORPUS).passages:
        assert passage.url.startswith("https://"), f"{passage.id} cites {passage.url}"
        assert not any(m in passage.url for m in MIRRORS), f"{passage.id} cites a mirror"
        assert passage.citation.strip(), passage.id


def test_updates_are_dated_linked_and_tagged_with_areas() -> None:
    updates = load_corpus(CORPUS).updates
    assert len(updates) >= 8
    assert [u.date for u in updates] == sorted(u.date for u in updates)
    assert all(u.url.startswith("https://") and u.areas and u.body for u in updates)
    assert set(AREA_SLUGS) <= {a for u in updates for a in u.areas}


def test_eval_set_is_large_and_every_expected_id_exists() -> None:
    data = yaml.safe_load((ROOT / "tests/data/eval.yaml").read_text())
    ids = {p.id for p in load_corpus(CORPUS).passages}
    per_area = Counter(q["area"] for q in data["questions"])
    assert len(data["questions"]) >= 120 and len(data["off_topic"]) >= 15
    assert all(per_area[slug] >= 10 for slug in AREA_SLUGS), per_area
    missing = [(q["q"], pid) for q in data["questions"] for pid in q["expected"] if pid not in ids]
    assert not missing


def test_a_field_typo_is_one_problem_with_a_hint_not_one_per_file_naming_the_passage(
    tmp_path: Path,
) -> None:
    """'knid: recommendation' made the passage invalid, and every file naming it reported an
    unknown passage ID as well: six problems for one typo, most of them misleading."""
    text = PASSAGE.format(id="VAL-R1", title="A", kind="recommendation", text=WORDS)
    write_area(tmp_path, text.replace("kind:", "knid:"))
    (tmp_path / "highlights.yaml").write_text("VAL-R1:\n  Valuation helps:\n  - why value?\n")
    (tmp_path / "scope.yaml").write_text(
        "questions:\n- q: why value an asset\n  area: valuation\n  expected: [VAL-R1]\n"
    )
    problems = problems_in(tmp_path)
    assert any("unknown field 'knid' (did you mean 'kind'?)" in p for p in problems), problems
    assert not any("unknown passage ID" in p for p in problems), problems
    write_area(tmp_path, "")  # a passage really gone is still reported where it is named
    assert sum("unknown passage ID VAL-R1" in p for p in problems_in(tmp_path)) == 2


def test_duplicate_ids_are_reported_with_both_places(tmp_path: Path) -> None:
    text = PASSAGE.format(id="VAL-R1", title="A", kind="recommendation", text=WORDS)
    write_area(tmp_path, text + text)
    problems = problems_in(tmp_path)
    assert any("duplicate ID VAL-R1" in p and "valuation.md:7" in p for p in problems), problems


@pytest.mark.parametrize(
    ("passage", "expected"),
    [
        (
            PASSAGE.format(id="VAL-R1", title="A", kind="opinion", text=WORDS),
            "unknown kind 'opinion'",
        ),
        (PASSAGE.format(id="VAL-R1", title="A", kind="example", text=""), "empty text"),
        (
            PASSAGE.format(id="VAL-R1", title="A", kind="example", text=(WORDS + " ") * 4),
            "text too long",
        ),
        (
            PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS).replace(
                "source:", "# source:"
            ),
            "missing citation",
        ),
        (
            PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS).replace(
                "url: ", "link: "
            ),
            "unknown field 'link'",
        ),
        (
            PASSAGE.format(id="OS-R1", title="A", kind="example", text=WORDS),
            "IDs in this area start with 'VAL-'",
        ),
        ("\n## VAL-R1 without colon\n", "malformed heading"),
    ],
)
def test_passage_problems_are_reported_as_file_line_message(
    tmp_path: Path, passage: str, expected: str
) -> None:
    write_area(tmp_path, passage)
    problems = problems_in(tmp_path)
    assert any(expected in p and p.startswith(f"{tmp_path}/valuation.md:") for p in problems), (
        problems
    )


def test_missing_url_is_reported(tmp_path: Path) -> None:
    text = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS)
    write_area(tmp_path, text.replace("url: https://eur-lex.europa.eu/eli/reco/2023/499/oj\n", ""))
    assert any("VAL-R1: missing url" in p for p in problems_in(tmp_path))


def test_unknown_area_and_malformed_front_matter_are_reported(tmp_path: Path) -> None:
    write_area(
        tmp_path, "", slug="patents", front="---\nslug: patents\ntitle: P\ndescription: D\n---\n"
    )
    write_area(tmp_path, "", slug="valuation", front="---\nslug: [valuation\n---\n")
    problems = problems_in(tmp_path)
    assert any("patents.md:2: unknown area 'patents'" in p for p in problems), problems
    assert any("valuation.md" in p and "malformed front matter" in p for p in problems), problems


def test_validate_exits_non_zero_and_prints_each_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(CORPUS, tmp_path / "corpus")
    area_file = tmp_path / "corpus" / "valuation.md"
    area_file.write_text(area_file.read_text().replace("kind: definition", "kind: musing", 1))
    monkeypatch.setenv("IPBOT_CORPUS_DIR", str(tmp_path / "corpus"))
    assert main(["corpus", "validate"]) == 1
    out = capsys.readouterr().out
    assert "valuation.md:" in out and "unknown kind 'musing'" in out


def test_an_impossible_date_and_a_file_that_is_not_utf8_are_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(CORPUS, tmp_path / "corpus")
    update = next((tmp_path / "corpus" / "updates").glob("*.md"))
    lines = update.read_text().splitlines()
    date_line = next(n for n, line in enumerate(lines, start=1) if line.startswith("date:"))
    lines[date_line - 1] = "date: 2023-02-30"
    update.write_text("\n".join(lines) + "\n")
    area_file = tmp_path / "corpus" / "valuation.md"
    text = area_file.read_bytes().split(b"\n")
    text[5] += " caf\xe9".encode("latin-1")  # saved by an editor as Latin-1
    area_file.write_bytes(b"\n".join(text))
    monkeypatch.setenv("IPBOT_CORPUS_DIR", str(tmp_path / "corpus"))

    code = main(["corpus", "validate"])
    out = capsys.readouterr().out

    assert code == 1
    assert f"{update.name}:{date_line}: impossible date" in out, out
    assert "valuation.md:6: not valid UTF-8" in out, out


def test_checked_date_is_read_and_an_old_one_is_only_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(CORPUS, tmp_path / "corpus")
    area_file = tmp_path / "corpus" / "valuation.md"
    text = area_file.read_text()
    first_url = text.index("\nurl: ")
    area_file.write_text(text[:first_url] + "\nchecked: 2001-05-04" + text[first_url:])
    monkeypatch.setenv("IPBOT_CORPUS_DIR", str(tmp_path / "corpus"))
    monkeypatch.setenv("IPBOT_STALE_AFTER_DAYS", "30")
    assert main(["corpus", "validate"]) == 0
    out = capsys.readouterr().out
    assert "valuation.md:" in out and "last checked 2001-05-04" in out and "(warning)" in out
    first = load_corpus(tmp_path / "corpus").passages_in("valuation")[0]
    assert first.checked == dt.date(2001, 5, 4)


def test_checked_date_within_the_allowed_age_gives_no_warning(tmp_path: Path) -> None:
    passage = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS)
    write_area(tmp_path, passage.replace("\nurl:", "\nchecked: 2026-01-10\nurl:"))
    corpus = load_corpus(tmp_path)
    assert stale_passages(corpus, 365, today=dt.date(2026, 6, 1)) == []
    assert len(stale_passages(corpus, 100, today=dt.date(2026, 6, 1))) == 1


@pytest.mark.parametrize("value", ["30/11/2026", "2026-1-5", "2999-01-01"])
def test_malformed_or_future_checked_date_is_an_error(tmp_path: Path, value: str) -> None:
    passage = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS)
    write_area(tmp_path, passage.replace("\nurl:", f"\nchecked: {value}\nurl:"))
    problems = problems_in(tmp_path)
    assert any(f"{tmp_path}/valuation.md:" in p and "VAL-R1: checked date" in p for p in problems)


def test_country_names_are_read_and_found_at_the_start_of_a_word(tmp_path: Path) -> None:
    passage = PASSAGE.format(id="VAL-E1", title="A", kind="example", text=WORDS)
    write_area(tmp_path, passage.replace("\nurl:", "\ncountry: Germany, German, Niemc\nurl:"))
    (found,) = load_corpus(tmp_path).passages
    assert found.country == ("Germany", "German", "Niemc")
    assert names_country("does my GERMAN university own it?", found)
    assert names_country("pracuję w Niemczech", found)  # an inflected form
    assert not names_country("who owns what I invent?", found)
    assert not names_country("no Reichsgermany here", found)


def test_an_empty_country_field_is_an_error(tmp_path: Path) -> None:
    passage = PASSAGE.format(id="VAL-E1", title="A", kind="example", text=WORDS)
    write_area(tmp_path, passage.replace("\nurl:", "\ncountry: , \nurl:"))
    assert any("VAL-E1: country: names no country" in p for p in problems_in(tmp_path))


def test_unreadable_corpus_files_are_problems_not_crashes(tmp_path: Path) -> None:
    """A folder or a looping link named like an area file, and bytes that are not UTF-8 in
    VERSION or the glossary, stopped validation, the start and /reload with a bare error."""
    write_area(tmp_path, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS))
    (tmp_path / "old.md").mkdir()
    (tmp_path / "loop.md").symlink_to(tmp_path / "loop.md")
    (tmp_path / "VERSION").write_bytes(b"2026.11 \xe9t\xe9\n")
    (tmp_path / "glossary.md").write_bytes(b"- **MTA**: material transfer \xff agreement\n")
    problems = problems_in(tmp_path)

    assert any("old.md:0: cannot be read" in p for p in problems)
    assert any("loop.md:0: cannot be read" in p for p in problems)
    assert any("VERSION:1: not valid UTF-8" in p for p in problems)
    assert any("glossary.md:1: not valid UTF-8" in p for p in problems)


def test_an_update_dated_with_a_time_of_day_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """YAML reads "2025-10-01 09:30:00" as a datetime, which sorting beside dates crashed."""
    write_area(tmp_path, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS))
    (tmp_path / "updates").mkdir()
    for name, date in (("a", "2025-10-01 09:30:00"), ("b", "2025-10-02")):
        (tmp_path / "updates" / f"{name}.md").write_text(
            f"---\ndate: {date}\ntitle: T\nurl: https://example.org/\nareas: all\n---\n\nText.\n"
        )
    assert any("a.md:2: date must be written YYYY-MM-DD" in p for p in problems_in(tmp_path))


def test_glossary_mistakes_are_reported_as_file_line_message(tmp_path: Path) -> None:
    write_area(tmp_path, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS))
    (tmp_path / "glossary.md").write_text(
        "# Glossary\n- MTA: material transfer agreement\nMTA material\n- mta: again\n- NDA:\n"
    )
    problems = problems_in(tmp_path)
    glossary = f"{tmp_path}/glossary.md"
    assert any(p.startswith(f"{glossary}:3: expected '- TERM: meaning") for p in problems)
    assert f"{glossary}:4: 'mta' is already defined on line 2" in problems
    assert f"{glossary}:5: 'NDA' has no meaning after the colon" in problems


def test_glossary_translation_mistakes_are_reported(tmp_path: Path) -> None:
    write_area(tmp_path, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS))
    (tmp_path / "glossary.md").write_text(
        "- word = de: Wort*; xx: mot; fr: mo*t\n"
        "- other = de: wort*\n"
        "- gibberishword = de: Kauderwelsch\n"
    )
    problems = problems_in(tmp_path)
    glossary = f"{tmp_path}/glossary.md"
    assert any(p.startswith(f"{glossary}:1: 'xx' is not the code") for p in problems)
    assert f"{glossary}:1: 'mo*t': '*' may only end a word" in problems
    assert f"{glossary}:2: 'wort*' (de) already means 'word' on line 1" in problems
    assert f"{glossary}:3: no passage uses gibberishword ('gibberishword')" in problems


def test_translations_bridge_inflected_words_to_english_terms() -> None:
    glossary, problems = parse_glossary(
        "- patent = hu: szabadalm*, szabadalom; de: Patent*\n"
        "- intellectual property = fr: propriété intellectuelle\n"
    )
    assert not problems
    assert glossary.english_terms("Mennyit ér a szabadalmunk?", "hu") == ["patent"]
    assert glossary.english_terms("PROPRIETE INTELLECTUELLE et brevets", "fr") == [
        "intellectual property"
    ]
    assert glossary.english_terms("Patentanwalt gesucht", "fr") == []  # only French words
    assert glossary.english_terms("Patentanwalt gesucht", "da") == ["patent"]  # no Danish: all


def test_a_question_taken_for_a_neighbour_language_is_bridged_by_its_longer_words() -> None:
    glossary, problems = parse_glossary(
        "- knowledge valorisation = sv: nyttiggör*\n"
        "- valuation value = sv: värt\n"
        "- results = no: resultat*\n"
    )
    assert not problems
    # langdetect takes this Swedish question for Danish
    swedish = "Vad betyder nyttiggörande egentligen?"
    assert glossary.english_terms(swedish, "da") == ["knowledge valorisation"]
    # without accents Norwegian "vårt" (our) is Swedish "värt" (worth): short words stay home
    assert glossary.english_terms("Prosjektet vårt er ferdig", "no") == []


OWNS_JOINT_RESULTS = {"ownership owns", "joint ownership", "results"}


@pytest.mark.parametrize(
    ("language", "question", "terms"),
    [
        ("ro", "Cui îi aparțin rezultatele unui proiect de cercetare comun?", OWNS_JOINT_RESULTS),
        ("fi", "Kenelle yhteisen tutkimushankkeen tulokset kuuluvat?", OWNS_JOINT_RESULTS),
        ("no", "Hvem eier resultatene fra et felles forskningsprosjekt?", OWNS_JOINT_RESULTS),
        ("uk", "Кому належать результати спільного дослідницького проєкту?", OWNS_JOINT_RESULTS),
        # Turkish "ortak" is both "joint" and "partner": the glossary gives it one meaning
        (
            "tr",
            "Ortak bir araştırma projesinin sonuçları kime aittir?",
            {"ownership owns", "results"},
        ),
    ],
)
def test_shipped_glossary_bridges_languages_beyond_the_first_eleven(
    language: str, question: str, terms: set[str]
) -> None:
    found = set(load_corpus(CORPUS).glossary.english_terms(question, language))
    assert terms <= found, f"a {language} question about who owns joint results bridged to {found}"


def test_glossary_adds_meanings_after_the_users_own_words() -> None:
    glossary, problems = parse_glossary(
        "- NDA: non-disclosure agreement; confidentiality agreement"
    )
    assert not problems
    assert glossary.expand("NDAs with a company?") == (
        "NDAs with a company? (non-disclosure agreement; confidentiality agreement)"
    )
    assert glossary.expand("a non-disclosure agreement (NDA)") == "a non-disclosure agreement (NDA)"
    assert glossary.expand("agendas and calendars") == "agendas and calendars"


@pytest.mark.parametrize(
    ("question", "widened"),
    [
        ("is it fair that the company gets all the results?", False),
        ("Fair terms for access rights?", False),
        ("ca. 6 months before the deadline", False),
        ("are our data FAIR?", True),
        ("what should the CA say about background?", True),
        ("nda?", True),  # an acronym that is no everyday word counts in any case
    ],
)
def test_an_acronym_that_is_also_an_everyday_word_counts_only_as_written(
    question: str, widened: bool
) -> None:
    glossary = load_corpus(CORPUS).glossary
    assert (glossary.expand(question) != question) is widened


def test_shipped_glossary_is_loaded_with_the_corpus() -> None:
    corpus = load_corpus(CORPUS)
    assert "material transfer agreement" in corpus.glossary.expand("MTA")


def test_scope_examples_are_checked_and_mistakes_located(tmp_path: Path) -> None:
    write_area(tmp_path, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS))
    (tmp_path / "scope.yaml").write_text(
        "questions:\n"
        "- q: what is our patent worth\n  area: valuation\n  expected: [VAL-R1]\n"
        "- q: how do we value a licence\n  expected: [VAL-R9]\n"
        "- q: who owns a design\n  area: designs\n"
        "near_domain:\n- how do I write a cover letter for a postdoc\n"
        "look_alikes:\n- a key moderators might mistype\n"
    )
    problems = problems_in(tmp_path)
    scope = f"{tmp_path}/scope.yaml"
    assert f"{scope}:5: unknown passage ID VAL-R9 for 'how do we value a licence'" in problems
    assert f"{scope}:7: unknown area 'designs' for 'who owns a design'" in problems
    assert f"{scope}:11: unknown key 'look_alikes'" in problems


def test_shipped_scope_examples_cover_both_kinds_and_every_area() -> None:
    scope = load_corpus(CORPUS).scope
    assert len(scope.questions) >= 100 and len(scope.near_domain) >= 150
    assert {q.area for q in scope.questions} == set(AREA_SLUGS)
    eval_set = yaml.safe_load((ROOT / "tests" / "data" / "eval.yaml").read_text())
    measured = {q["q"] for q in eval_set["questions"]} | set(eval_set["near_domain"])
    assert not measured & ({q.question for q in scope.questions} | set(scope.near_domain)), (
        "an eval question is also a training example: the tuning figures would be optimistic"
    )


def test_questions_asked_attach_to_the_sentence_they_start(tmp_path: Path) -> None:
    text = (
        "Valuation helps organisations decide how to protect an asset and what to ask for it. "
        "A patent that nobody licenses still costs renewal fees every year it is kept in force. "
        + " ".join(["Valuation is revisited as the market and the technology change."] * 3)
    )
    write_area(tmp_path, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=text))
    (tmp_path / "highlights.yaml").write_text(
        "VAL-R1:\n"
        "  A patent that nobody licenses:\n  - do unused patents still cost money?\n"
        "  Valuation helps   organisations decide:\n  - why value an invention at all\n"
    )
    passage = load_corpus(tmp_path).by_id["VAL-R1"]
    assert passage.asked[:2] == (
        ("why value an invention at all",),
        ("do unused patents still cost money?",),
    )
    assert not any(passage.asked[2:])


def test_questions_asked_that_no_longer_fit_their_passage_are_located(tmp_path: Path) -> None:
    passages = [
        PASSAGE.format(id=i, title="A", kind="example", text=WORDS) for i in ("VAL-R1", "VAL-R2")
    ]
    write_area(tmp_path, "".join(passages))
    (tmp_path / "highlights.yaml").write_text(
        "VAL-R1:\n"
        "  A sentence that was rewritten:\n  - what now?\n"
        "  Valuation helps research:\n  - why value?\n"  # starts all five sentences
        "VAL-R9:\n  Valuation helps:\n  - gone?\n"
        "VAL-R2: [not, a, mapping]\n"
    )
    problems = problems_in(tmp_path)
    asked = f"{tmp_path}/highlights.yaml"
    assert (
        f"{asked}:1: VAL-R1: 'A sentence that was rewritten' starts no sentence of the passage"
        in problems
    )
    assert (
        f"{asked}:1: VAL-R1: 'Valuation helps research' starts 5 sentences of the passage"
        in problems
    )
    assert f"{asked}:6: unknown passage ID VAL-R9" in problems
    assert any(p.startswith(f"{asked}:9: VAL-R2: expected the first words") for p in problems)


def test_shipped_questions_asked_cover_every_passage_and_make_the_index_stale(
    tmp_path: Path,
) -> None:
    corpus = load_corpus(CORPUS)
    assert all(any(p.asked) for p in corpus.passages)
    shutil.copytree(CORPUS, tmp_path / "corpus")
    path = tmp_path / "corpus" / "highlights.yaml"
    first = next(q for q in corpus.passages[0].asked if q)[0]
    path.write_text(path.read_text().replace(first, first + " really", 1))
    assert load_corpus(tmp_path / "corpus").hash != corpus.hash


def test_no_question_asked_is_an_eval_question() -> None:
    def norm(text: str) -> str:
        return " ".join(text.lower().split()).strip("?!. ")

    asked = {norm(q) for p in load_corpus(CORPUS).passages for s in p.asked for q in s}
    measured = set()
    for path in (ROOT / "tests" / "data").glob("*.yaml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        items = data if isinstance(data, list) else data.get("questions", [])
        measured |= {norm(i.get("q") or i.get("en", "")) for i in items if isinstance(i, dict)}
    assert not asked & measured, "a highlight measure would measure its own training questions"


def write_update(folder: Path, name: str, title: str, body: str, url: str = "") -> Path:
    path = folder / "updates" / f"{name}.md"
    path.parent.mkdir(exist_ok=True)
    url = url or "https://eur-lex.europa.eu/eli/reco/2023/499/oj"
    path.write_text(
        f"---\ndate: 2023-03-01\ntitle: {title}\nurl: {url}\nareas: all\n---\n\n{body}\n"
    )
    return path


def test_files_saved_with_a_byte_order_mark_load_as_without_one(tmp_path: Path) -> None:
    """Windows editors start a UTF-8 file with a BOM, which hid the front matter's '---'."""
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    text = "Unused patents still cost renewal fees. " + WORDS
    for folder in (plain, marked):
        folder.mkdir()
        write_area(folder, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=text))
        (folder / "glossary.md").write_text("- worth: valuation\n")
        (folder / "highlights.yaml").write_text("VAL-R1:\n  Unused patents:\n  - do they cost?\n")
        (folder / "scope.yaml").write_text(
            "questions:\n- q: what is it worth\n  expected: [VAL-R1]\nnear_domain:\n- a CV\n"
        )
        write_update(folder, "2023-03-01-adopted", "Code adopted", "The Code was adopted.")
    for path in [*marked.glob("*.*"), *marked.glob("updates/*.md")]:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    expected, found = load_corpus(plain), load_corpus(marked)

    assert [replace(p, file="") for p in found.passages] == [
        replace(p, file="") for p in expected.passages
    ]
    assert found.updates == expected.updates and found.hash == expected.hash


@pytest.mark.parametrize("field", ["source", "keywords"])
def test_a_field_given_twice_in_a_passage_is_located_at_the_second(
    tmp_path: Path, field: str
) -> None:
    """The second line silently won: a moderator adding a citation lost the first one."""
    passage = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS)
    write_area(tmp_path, passage.replace("/oj\n", f"/oj\nkeywords: a\n{field}: another\n"))
    first, second = (9, 12) if field == "source" else (11, 12)
    assert (
        f"{tmp_path}/valuation.md:{second}: VAL-R1: field '{field}' is given twice "
        f"(first on line {first}); keep one"
    ) in problems_in(tmp_path)


@pytest.mark.parametrize("heading", ["### Notes", "# Title", "##Heading"])
def test_a_heading_inside_a_passage_is_located(tmp_path: Path, heading: str) -> None:
    passage = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=f"{WORDS}\n{heading}")
    write_area(tmp_path, passage)
    assert (
        f"{tmp_path}/valuation.md:13: a heading inside a passage ('{heading}'): passages cannot "
        "contain headings; a new passage starts with '## ID: Title'"
    ) in problems_in(tmp_path)


def test_a_passage_heading_without_its_space_says_how_to_write_it(tmp_path: Path) -> None:
    first = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS)
    second = PASSAGE.format(id="VAL-R2", title="B", kind="example", text=WORDS)
    write_area(tmp_path, first + second.replace("## VAL-R2", "##VAL-R2"))
    assert any(
        p.startswith(f"{tmp_path}/valuation.md:14: a heading inside a passage")
        and p.endswith("(here: '## VAL-R2: B')")
        for p in problems_in(tmp_path)
    )


def test_a_heading_that_is_no_passage_heading_says_passages_have_none(tmp_path: Path) -> None:
    passage = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=f"{WORDS}\n## Notes")
    write_area(tmp_path, passage)
    assert (
        f"{tmp_path}/valuation.md:13: malformed heading: expected '## ID: Title'; "
        "passages cannot contain other headings"
    ) in problems_in(tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://eur-lex.europa.eu/eli/reco/2023/499/oj",
            "URL must start with https://, not http://: cite the authoritative page over https",
        ),
        (
            "https://web.archive.org/web/2023/https://eur-lex.europa.eu/eli/reco/2023/499/oj",
            "web.archive.org is a mirror or aggregator: cite the publisher's own page, not a copy",
        ),
        (
            "https://www.scribd.com/document/1/code-of-practice",
            "www.scribd.com is a mirror or aggregator: cite the publisher's own page, not a copy",
        ),
        (
            "https://eur--lex-europa-eu.translate.goog/eli/reco/2023/499/oj",
            "eur--lex-europa-eu.translate.goog is a mirror or aggregator",
        ),
    ],
)
def test_a_source_over_http_or_on_a_mirror_is_located_at_its_url(
    tmp_path: Path, url: str, expected: str
) -> None:
    passage = PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS)
    write_area(tmp_path, passage.replace("https://eur-lex.europa.eu/eli/reco/2023/499/oj", url))
    write_update(tmp_path, "2023-03-01-adopted", "Code adopted", "The Code was adopted.", url)
    problems = problems_in(tmp_path)
    assert any(p.startswith(f"{tmp_path}/valuation.md:10: VAL-R1: {expected}") for p in problems)
    update = f"{tmp_path}/updates/2023-03-01-adopted.md"
    assert any(p.startswith(f"{update}:4: {expected}") for p in problems), problems


@pytest.mark.parametrize(
    ("second_title", "second_body", "why"),
    [
        ("Code  ADOPTED", "Other words about the Code.", "same title and date"),
        ("The Commission adopts the Code", "The Code was adopted.", "same text"),
    ],
)
def test_one_update_in_two_files_is_reported_naming_both(
    tmp_path: Path, second_title: str, second_body: str, why: str
) -> None:
    write_area(tmp_path, PASSAGE.format(id="VAL-R1", title="A", kind="example", text=WORDS))
    write_update(tmp_path, "2023-03-01-adopted", "Code adopted", "The Code was adopted.")
    write_update(tmp_path, "2023-03-01-code-adopted", second_title, second_body)
    assert (
        f"{tmp_path}/updates/2023-03-01-code-adopted.md:1: the same update as "
        f"2023-03-01-adopted.md ({why}); keep one of the two files"
    ) in problems_in(tmp_path)
