"""Atom feeds: readers follow published updates without giving ipbot any personal data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bot.store import Store
from bot.subscriptions import publish_update, update_items
from retrieval.search import Retriever

ATOM = "{http://www.w3.org/2005/Atom}"


async def test_publishing_writes_an_atom_feed_for_all_and_for_each_area(
    retriever: Retriever, store: Store, tmp_path: Path
) -> None:
    corpus = retriever.corpus
    item = update_items(corpus)["2024-03-01-codes-co-creation-and-citizen-engagement"]
    feeds = tmp_path / "feeds"

    await publish_update(store, item, "cli", (feeds, corpus))

    everything = ET.parse(feeds / "all.xml").getroot()
    [entry] = everything.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title") == item.title
    assert entry.find(f"{ATOM}link").get("href") == item.url  # type: ignore[union-attr]
    assert sorted(p.stem for p in feeds.glob("*.xml")) == sorted(
        ["all", *(a.slug for a in item.areas)]
    )
    assert not (feeds / "valuation.xml").exists(), "no feed for an area without updates"


async def test_an_unpublished_update_is_not_in_the_feeds(
    retriever: Retriever, store: Store, tmp_path: Path
) -> None:
    corpus = retriever.corpus
    items = update_items(corpus)
    first, second = sorted(items)[:2]
    await publish_update(store, items[first], "cli", (tmp_path, corpus))

    titles = [
        e.findtext(f"{ATOM}title")
        for e in ET.parse(tmp_path / "all.xml").getroot().iter(f"{ATOM}entry")
    ]
    assert titles == [items[first].title]
