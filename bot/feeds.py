"""Atom feeds of published updates, one for all areas and one per area, in the data folder.

Readers can follow them in any feed reader without giving ipbot any personal data.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from feedgen.feed import FeedGenerator

from bot.sender import UpdateItem

FEED_ID = "tag:ipbot,2023:updates"
SITE = "https://eur-lex.europa.eu/eli/reco/2023/499/oj"


def build_feed(items: list[UpdateItem], slug: str, title: str) -> bytes:
    feed = FeedGenerator()
    feed.id(f"{FEED_ID}:{slug}")
    feed.title(title)
    feed.link(href=SITE, rel="related")
    feed.subtitle("News of the EU Code of Practice on the management of intellectual assets")
    feed.language("en")
    newest = max((i.date for i in items), default=dt.date(2023, 3, 1))
    feed.updated(dt.datetime.combine(newest, dt.time(), dt.UTC))
    for item in sorted(items, key=lambda i: (i.date, i.id)):
        entry = feed.add_entry()
        entry.id(f"{FEED_ID}:{item.id}")
        entry.title(item.title)
        entry.link(href=item.url)
        entry.summary(item.body)
        entry.updated(dt.datetime.combine(item.date, dt.time(), dt.UTC))
        for area in item.areas:
            entry.category(term=area.slug, label=area.title)
    return feed.atom_str(pretty=True)


def write_feeds(folder: Path, items: Iterable[UpdateItem]) -> list[Path]:
    """`all.xml` and `<area>.xml` for every area with an update; each written atomically."""
    items = list(items)
    folder.mkdir(parents=True, exist_ok=True)
    feeds = {"all": (items, "ipbot: Code of Practice news")}
    for item in items:
        for area in item.areas:
            chosen = [i for i in items if area in i.areas]
            feeds[area.slug] = (chosen, f"ipbot: {area.title} news")
    written = []
    for slug, (chosen, title) in feeds.items():
        path = folder / f"{slug}.xml"
        with tempfile.NamedTemporaryFile("wb", dir=folder, delete=False, suffix=".tmp") as tmp:
            tmp.write(build_feed(chosen, slug, title))
        os.replace(tmp.name, path)
        written.append(path)
    return written
