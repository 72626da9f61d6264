"""`ipbot report --html`: the moderators' page, opened in a real headless browser."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.cli import main
from bot.moderation import Gap, Usage
from bot.report import Report, render_html
from bot.store import Store
from bot.store.tables import QuestionRow, utcnow
from tests.browser import CHROMIUM, visit
from tests.conftest import CORPUS_DIR

HOSTILE = (
    "<script>document.title = 'ran'</script>"
    '<img src="https://example.com/x.png" onerror="document.title = \'ran\'"> who owns it?'
)
PAGE_FACTS = """(() => {
  const charts = [...document.querySelectorAll("figure img")].map(img => {
    const box = img.getBoundingClientRect();
    return {title: img.title, alt: img.alt, width: box.width, height: box.height, loaded: img.naturalWidth > 0};
  });
  return {title: document.title, text: document.body.innerText, charts,
          scripts: document.scripts.length, overflow: document.documentElement.scrollWidth};
})()"""
CHARTS = ["Questions per day", "Share of questions answered, per day", "Questions per area"]
NARROW = 360  # a phone held upright, in CSS pixels

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium); CI installs it and runs this",
)


async def seed(database: str) -> None:
    """Three days of questions: answered in two areas, abstained, voted, and one hostile."""
    store = await Store.open(database)
    try:
        now = utcnow()
        asked = [
            (2, "who owns joint results?", "industry-academia", True, 80.0),
            (2, "how do I value a patent?", "valuation", True, 120.0),
            (1, "what is a patent pool and should our university join one?", None, False, 60.0),
            (1, "how do patent pools work for universities", None, False, 70.0),
            (0, HOSTILE, None, False, 90.0),
            (0, "what is a licence fee?", "valuation", True, 100.0),
        ]
        for days_ago, text, area, answered, latency in asked:
            number = await store.record_question(
                "telegram", text, None, area, answered, 0.5, [], latency
            )
            async with store.session.begin() as session:
                when = now - dt.timedelta(days=days_ago, minutes=5)
                await session.execute(
                    update(QuestionRow).where(QuestionRow.id == number).values(asked_at=when)
                )
            if text.startswith("how do I value"):
                await store.record_vote(number, "telegram:7", helpful=False)
            if text.startswith("who owns"):
                await store.record_vote(number, "telegram:7", helpful=True)
    finally:
        await store.close()


@pytest.fixture
def database(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty SQLite store, and the CLI pointed at it and at the session's built index.

    The report needs only the English model (gaps are grouped with it), not the multilingual one.
    """
    url = f"sqlite:///{tmp_path / 'ipbot.db'}"
    for name, value in {
        "IPBOT_DATA_DIR": str(data_dir),
        "IPBOT_CORPUS_DIR": str(CORPUS_DIR),
        "IPBOT_DATABASE_URL": url,
        "IPBOT_MULTILINGUAL": "false",
    }.items():
        monkeypatch.setenv(name, value)
    return url


def run_cli(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit:  # argparse's own errors
        return int(exit.code or 0)


@needs_chromium
def test_the_report_opens_in_a_browser_with_charts_and_nothing_runs(
    database: str, tmp_path: Path
) -> None:
    asyncio.run(seed(database))
    page = tmp_path / "report.html"

    assert run_cli(["report", "--html", str(page), "--days", "7"]) == 0
    seen = asyncio.run(visit(page.as_uri(), PAGE_FACTS, width=NARROW))

    facts = seen.result
    assert not seen.console and not seen.errors, (seen.console, seen.errors)
    assert {url.split(":")[0] for url in seen.requests} <= {"file", "data"}, seen.requests
    assert [chart["title"] for chart in facts["charts"]] == CHARTS
    for chart in facts["charts"]:
        assert chart["loaded"] and chart["width"] > 100 and chart["height"] > 50, chart
        assert chart["alt"].startswith(("Bar chart", "Line chart")), chart["alt"]
    assert HOSTILE in facts["text"], "the hostile question should show as plain text"
    assert facts["title"] == "ipbot report: the last 7 days" and facts["scripts"] == 0
    assert facts["overflow"] <= NARROW, "the page should not scroll sideways on a phone"
    assert "6\nquestions asked" in facts["text"] and "50%\nanswered" in facts["text"]
    assert "2 questions, nearest area" in facts["text"], "the patent pool questions, grouped"


def test_an_empty_period_says_so(database: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"

    assert run_cli(["report", "--html", str(page)]) == 0

    html = page.read_text()
    assert "No questions were asked in the last 30 days." in html and "<img" not in html


def test_questions_are_escaped_in_the_html() -> None:
    now = utcnow()
    usage = Usage(1, 0, 0, 0, None, None, {now.date(): (1, 0)}, [])
    gaps = [Gap((HOSTILE,), "IP valuation")]

    html = render_html(Report(7, now - dt.timedelta(days=7), now, "2026.11.1", usage, gaps))

    assert "&lt;script&gt;document.title" in html and "<script" not in html
    assert '<img src="https://' not in html and 'onerror="' not in html


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--days", "0"], "--days must be between 1 and 3650"),
        (["--days", "many"], "invalid int value: 'many'"),
        ([], "the following arguments are required: --html"),
        (["--html", "{tmp}"], "is a folder"),
        (["--html", "{tmp}/missing/report.html"], "does not exist"),
    ],
)
def test_bad_arguments_get_one_clear_line(
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    if "--html" not in args and "required" not in expected:
        args += ["--html", str(tmp_path / "report.html")]

    code = run_cli(["report", *args])

    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
