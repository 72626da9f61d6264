"""`ipbot report --html`: one static page on how ipbot is used and what the corpus is missing.

The page holds everything it shows, so it opens offline and from an e-mail attachment: charts
are matplotlib SVG inlined as images, there is no script, and its security policy loads nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from bot.moderation import EXAMPLES_PER_GAP, Gap, Moderation, Usage
from bot.store.tables import utcnow
from retrieval.search import UserInputError

GAPS_SHOWN = 10
COLOUR = "#1f5f99"  # dark blue, 6.7:1 on white (charts need 3:1 to be told apart)
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font-family: system-ui, sans-serif; line-height: 1.5; color: #1a1a1a; margin: 0; }
main { max-width: 52rem; margin: 0 auto; padding: 1rem; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 14rem), 1fr));
  gap: 0.75rem; list-style: none; padding: 0; }
.figures li { border: 1px solid #ccc; border-radius: 0.4rem; padding: 0.6rem; }
.figures strong { display: block; font-size: 1.6rem; }
figure { margin: 1.5rem 0; }
figure img { width: 100%; height: auto; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }
.gaps li { margin-bottom: 1rem; overflow-wrap: anywhere; }
.meta { color: #444; }
"""


@dataclass(frozen=True)
class Report:
    """Everything the page shows, gathered before any HTML is written."""

    days: int
    start: dt.datetime
    generated_at: dt.datetime
    corpus_version: str
    usage: Usage
    gaps: list[Gap]


async def gather_report(moderation: Moderation, days: int) -> Report:
    """The figures and gaps of the last `days` days, as /stats and /gaps count them."""
    now = utcnow()
    return Report(
        days=days,
        start=now - dt.timedelta(days=days),
        generated_at=now,
        corpus_version=moderation.retriever.corpus.version,
        usage=await moderation.usage(days),
        gaps=await moderation.gaps(days),
    )


def check_destination(path: Path) -> None:
    """Fail before the slow work (loading the model) if the page could not be written."""
    if path.is_dir():
        raise UserInputError(f"{path} is a folder; give a file name such as report.html")
    if not path.parent.is_dir():
        raise UserInputError(f"cannot write {path}: the folder {path.parent} does not exist")


def write_report(report: Report, path: Path) -> None:
    try:
        path.write_text(render_html(report), encoding="utf-8")
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def render_html(report: Report) -> str:
    period = f"the last {report.days} days"
    body = [
        f"<h1>How ipbot was used in {period}</h1>",
        f'<p class="meta">{escape(meta_line(report))}</p>',
    ]
    if report.usage.questions:
        body += [figures_section(report.usage), charts_section(report), gaps_section(report.gaps)]
    else:
        body.append(f"<p><strong>No questions were asked in {period}.</strong></p>")
    return page(f"ipbot report: {period}", "\n".join(body))


def page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{POLICY}">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""


def meta_line(report: Report) -> str:
    return (
        f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC · corpus version "
        f"{report.corpus_version} · period {report.start:%Y-%m-%d %H:%M} to "
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC ({report.days} days)"
    )


def figures_section(usage: Usage) -> str:
    share = usage.answered / usage.questions
    items = [
        (f"{usage.questions}", "questions asked"),
        (f"{share:.0%}", f"answered ({usage.answered} of {usage.questions}); the rest got "
         "“no answer in the corpus”"),
        (f"{usage.helpful}", "votes “helpful”"),
        (f"{usage.not_helpful}", "votes “not helpful”"),
    ]  # fmt: skip
    if usage.latency_median_ms is not None:
        items += [
            (f"{usage.latency_median_ms:.0f} ms", "half of the answers came faster than this"),
            (f"{usage.latency_p95_ms:.0f} ms", "95 in 100 answers came faster than this"),
        ]
    cells = "\n".join(
        f"<li><strong>{escape(value)}</strong> {escape(label)}</li>" for value, label in items
    )
    return f'<h2>In figures</h2>\n<ul class="figures">\n{cells}\n</ul>'


def charts_section(report: Report) -> str:
    days = every_day(report.start.date(), report.generated_at.date())
    asked = [report.usage.per_day.get(day, (0, 0))[0] for day in days]
    answered_days = sorted(report.usage.per_day.items())
    shares = [(day, 100 * answered / total) for day, (total, answered) in answered_days]
    areas = report.usage.per_area
    busiest = max(zip(asked, days, strict=True))
    parts = [
        "<h2>Charts</h2>",
        chart(
            "Questions per day",
            per_day_chart(days, asked),
            f"Bar chart of the questions asked each day: {sum(asked)} in all, "
            f"most on {busiest[1]:%d %B %Y} ({busiest[0]}).",
            ("Day", "Questions"),
            [(f"{day:%Y-%m-%d}", str(n)) for day, n in zip(days, asked, strict=True) if n],
        ),
        chart(
            "Share of questions answered, per day",
            answered_share_chart(days, shares),
            "Line chart of the share of each day's questions that got an answer from the "
            f"corpus; {report.usage.answered} of {report.usage.questions} in the period.",
            ("Day", "Answered"),
            [(f"{day:%Y-%m-%d}", f"{share:.0f}%") for day, share in shares],
        ),
    ]
    if areas:
        parts.append(
            chart(
                "Questions per area",
                per_area_chart(areas),
                "Bar chart of the questions per area of the Code of Practice, most asked "
                f"first: {', '.join(f'{a} {n}' for a, n in areas[:3])}.",
                ("Area", "Questions"),
                [(area, str(n)) for area, n in areas],
            )
        )
    return "\n".join(parts)


def chart(
    title: str, svg: bytes, description: str, header: tuple[str, str], rows: list[tuple[str, str]]
) -> str:
    """A chart as an image described in words (its alt text), and its figures as a table."""
    source = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
    table = "\n".join(
        f"<tr><td>{escape(left)}</td><td>{escape(right)}</td></tr>" for left, right in rows
    )
    return f"""<figure>
<h3>{escape(title)}</h3>
<img src="{source}" alt="{escape(description)}" title="{escape(title)}">
<figcaption><details><summary>The figures as a table</summary>
<table><tr><th scope="col">{escape(header[0])}</th><th scope="col">{escape(header[1])}</th></tr>
{table}
</table></details></figcaption>
</figure>"""


def every_day(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def per_day_chart(days: list[dt.date], asked: list[int]) -> bytes:
    def draw(axes: Axes) -> None:
        axes.bar(date2num(days), asked, color=COLOUR, width=0.8)
        date_axis(axes, days)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("questions")

    return svg_chart(draw)


def answered_share_chart(days: list[dt.date], shares: list[tuple[dt.date, float]]) -> bytes:
    by_day = dict(shares)
    line = [by_day.get(day, math.nan) for day in days]  # the line breaks on days without questions

    def draw(axes: Axes) -> None:
        axes.plot(date2num(days), line, color=COLOUR, marker="o")
        date_axis(axes, days)
        axes.set_ylim(0, 105)
        axes.yaxis.set_major_formatter(PercentFormatter(100))
        axes.set_ylabel("answered")

    return svg_chart(draw)


def per_area_chart(areas: list[tuple[str, int]]) -> bytes:
    def draw(axes: Axes) -> None:
        axes.barh([a for a, _ in areas], [n for _, n in areas], color=COLOUR)
        axes.invert_yaxis()  # the most asked area on top
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("questions")

    return svg_chart(draw, height=0.9 + 0.35 * len(areas))


def date_axis(axes: Axes, days: list[dt.date]) -> None:
    """Every day of the period on the axis, so that the charts line up and gaps show."""
    first, last = date2num([days[0], days[-1]])
    axes.set_xlim(first - 0.6, last + 0.6)
    locator = AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def svg_chart(draw: Callable[[Axes], None], height: float = 3.0) -> bytes:
    """One plain chart as SVG, without pyplot's global state."""
    # Text as paths: the page needs no font. Dollar signs in area titles stay text, not
    # formulas. A fixed salt keeps the SVG the same for the same figures.
    out = io.BytesIO()
    with matplotlib.rc_context(
        {"svg.fonttype": "path", "text.parse_math": False, "svg.hashsalt": "ipbot"}
    ):
        figure = Figure(figsize=(8, height), layout="constrained")
        axes = figure.subplots()
        axes.spines[["top", "right"]].set_visible(False)
        draw(axes)
        figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def gaps_section(gaps: list[Gap]) -> str:
    heading = "<h2>What the corpus is missing</h2>"
    if not gaps:
        return heading + "\n<p>Every question got an answer, and none was voted not helpful.</p>"
    intro = (
        "<p>Questions ipbot could not answer, or whose answer was voted “not helpful”, grouped "
        f"by meaning, the biggest groups first (top {GAPS_SHOWN}). The nearest area is where a "
        "new passage would most likely belong.</p>"
    )
    return "\n".join(
        [heading, intro, '<ol class="gaps">', *map(gap_item, gaps[:GAPS_SHOWN]), "</ol>"]
    )


def gap_item(gap: Gap) -> str:
    examples = "".join(f"<li>{escape(q)}</li>" for q in gap.questions[:EXAMPLES_PER_GAP])
    more = gap.size - min(gap.size, EXAMPLES_PER_GAP)
    also = f"<p>and {more} more like these</p>" if more else ""
    noun = "question" if gap.size == 1 else "questions"
    return (
        f"<li><p><strong>{gap.size} {noun}</strong>, nearest area: "
        f"{escape(gap.nearest_area)}</p><ul>{examples}</ul>{also}</li>"
    )
