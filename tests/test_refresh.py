"""Corpus refresh without downtime: /reload under load, the quality gate, /promote, /rollback,
/versions, a broken corpus, starting on the last good version, and the command line.

Each test serves its own small corpus (the valuation area) with the real model, real FAISS
and BM25 builds and a real SQLite store; a reload adds or changes real corpus files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bot.assistant import Assistant
from bot.refresh import Refresher, wait_for_request
from bot.replies import AnswerReply, Context, Notice, RefreshReply, User
from bot.store import Store, VersionStatus
from retrieval.abstention import AbstentionPolicy
from retrieval.search import Retriever, open_retriever
from tests.conftest import CORPUS_DIR, ROOT

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the refresh worker runs on this loop
MODERATOR = User("telegram", "1001")
SOMEONE = User("telegram", "2002")
MTA_QUESTION = "Who at the university should sign a material transfer agreement for samples?"
EVAL = {
    "questions": [
        {
            "q": "How does the cost approach value a patent?",
            "area": "valuation",
            "expected": ["VAL-D2"],
        },
        {
            "q": "What is the income approach to IP valuation?",
            "area": "valuation",
            "expected": ["VAL-D4"],
        },
        {
            "q": "What does the ISO standard on monetary brand valuation cover?",
            "area": "valuation",
            "expected": ["VAL-E2"],
        },
        {
            "q": "Should our spin-off pay the university in equity or in royalties?",
            "area": "valuation",
            "expected": ["VAL-R11", "VAL-E9"],
        },
    ],
    "off_topic": ["What is the best pizza in Naples?", "How do I renew my passport?"],
}


@dataclass
class Served:
    corpus: Path
    data: Path
    retriever: Retriever
    refresher: Refresher
    assistant: Assistant
    store: Store

    async def say(self, user: User, line: str):  # type: ignore[no-untyped-def]
        return await self.assistant.handle(Context.private(user), line)


def small_corpus(folder: Path) -> Path:
    corpus = folder / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS_DIR / "valuation.md", corpus)
    (corpus / "VERSION").write_text("test-1\n")
    return corpus


def serving_retriever(corpus: Path, data: Path, gated: bool = False) -> Retriever:
    return open_retriever(
        corpus,
        data,
        "all-MiniLM-L6-v2",
        policy=AbstentionPolicy(),
        multilingual=False,
        gated=gated,
    )


def fresh_data(tmp_path: Path, data_dir: Path) -> Path:
    """A data folder of its own that shares the session's exported model (no re-export)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(data_dir / "models", target_is_directory=True)
    return data


@pytest.fixture
async def served(
    tmp_path: Path, data_dir: Path, retriever: Retriever, store: Store
) -> AsyncIterator[Served]:
    """A running refresh worker over a small corpus, as `ipbot run` has it."""
    corpus = small_corpus(tmp_path)
    data = fresh_data(tmp_path, data_dir)
    eval_file = tmp_path / "eval.yaml"
    eval_file.write_text(yaml.safe_dump(EVAL))
    own = await asyncio.to_thread(serving_retriever, corpus, data)
    refresher = Refresher(store, own, corpus, eval_file)
    await refresher.start()
    assistant = Assistant(
        own,
        store,
        rate_limit_per_minute=100_000,
        moderators=frozenset({MODERATOR.key}),
        refresher=refresher,
    )
    worker = asyncio.create_task(refresher.run())
    try:
        yield Served(corpus, data, own, refresher, assistant, store)
    finally:
        refresher.stop()
        await worker


def cited(reply: object) -> list[str]:
    assert isinstance(reply, AnswerReply), reply
    return [hit.passage.id for hit in reply.answer.hits] if reply.answer.answered else []


async def test_reload_under_load_answers_every_question_then_serves_the_new_content(
    served: Served,
) -> None:
    assert not any(pid.startswith("JIA-") for pid in cited(await served.say(SOMEONE, MTA_QUESTION)))
    shutil.copy(CORPUS_DIR / "industry-academia.md", served.corpus)
    update = sorted((CORPUS_DIR / "updates").glob("*.md"))[0]
    (served.corpus / "updates").mkdir()
    shutil.copy(update, served.corpus / "updates")

    replies: list[object] = []
    errors: list[BaseException] = []
    reloading = asyncio.create_task(served.say(MODERATOR, "/reload"))

    async def user_asks(number: int) -> None:  # ten chats, about 50 questions a second in all
        user = User("telegram", str(5000 + number))
        while not reloading.done():
            try:
                replies.append(await served.say(user, "How is an early-stage invention valued?"))
            except BaseException as exc:  # noqa: BLE001 - any failure is what we count
                errors.append(exc)
            await asyncio.sleep(0.2)

    await asyncio.gather(*(user_asks(n) for n in range(10)))
    summary = await reloading
    assert errors == []
    assert len(replies) >= 20
    assert all(isinstance(r, AnswerReply) and r.answer.answered for r in replies)
    assert isinstance(summary, RefreshReply) and summary.ok, summary
    assert "is now live" in summary.text and "JIA-D7" in summary.text
    assert "right passage in the top 3" in summary.text
    assert [title for title, _ in summary.offers]  # the new update, offered for publishing
    assert {"JIA-D7", "JIA-R13"} & set(cited(await served.say(SOMEONE, MTA_QUESTION)))
    live = await served.store.live_version()
    assert live is not None and live.build == served.retriever.index.build


async def test_broken_corpus_is_refused_with_its_line_and_nothing_changes(served: Served) -> None:
    before = served.retriever.index.build
    area = served.corpus / "valuation.md"
    lines = area.read_text().splitlines()
    url_line = next(i for i, line in enumerate(lines) if line.startswith("url:"))
    del lines[url_line]
    area.write_text("\n".join(lines) + "\n")
    reply = await served.say(MODERATOR, "/reload")
    assert isinstance(reply, RefreshReply) and not reply.ok
    assert "valuation.md:" in reply.text and "nothing changed" in reply.text
    assert served.retriever.index.build == before
    assert cited(await served.say(SOMEONE, "How does the cost approach value a patent?"))


async def test_about_shows_the_corpus_problems_as_the_files_are_now(served: Served) -> None:
    """Problems found at start stayed in /about after the files were fixed and /reload said
    the corpus had not changed; new ones found by a refused /reload were not shown."""
    area = served.corpus / "valuation.md"
    good = area.read_text()
    area.write_text(good.replace("kind: definition", "kind: opinion", 1))
    refused = await served.say(MODERATOR, "/reload")
    assert isinstance(refused, RefreshReply) and not refused.ok
    assert served.assistant.about(moderator=True).problems
    area.write_text(good)
    unchanged = await served.say(MODERATOR, "/reload")
    assert isinstance(unchanged, RefreshReply) and "has not changed" in unchanged.text
    assert served.assistant.about(moderator=True).problems == ()


async def test_quality_gate_holds_a_worse_corpus_until_a_moderator_promotes_it(
    served: Served,
) -> None:
    before = served.retriever.index.build
    area = served.corpus / "valuation.md"
    text = area.read_text()
    start = text.index("## VAL-D2:")
    area.write_text(text[:start] + text[text.index("## VAL-D3:") :])  # the cost approach goes
    held = await served.say(MODERATOR, "/reload")
    assert isinstance(held, RefreshReply) and not held.ok
    assert "NOT switched on" in held.text and "right passage in the top 3" in held.text
    assert served.retriever.index.build == before
    number = int(held.text.split("/promote ")[1].split()[0])
    listing = await served.say(MODERATOR, "/versions")
    assert isinstance(listing, Notice) and "HELD" in listing.text and "LIVE" in listing.text

    forced = await served.say(MODERATOR, f"/promote {number}")
    assert isinstance(forced, RefreshReply) and forced.ok, forced
    assert served.retriever.index.build != before
    assert "VAL-D2" not in {p.id for p in served.retriever.corpus.passages}


async def test_rollback_restores_what_was_answered_before(served: Served) -> None:
    question = "Should our spin-off pay the university in equity or in royalties?"
    old_text = served.retriever.corpus.by_id["VAL-R11"].text
    area = served.corpus / "valuation.md"
    area.write_text(area.read_text().replace(old_text, old_text + " Review the choice yearly."))
    reloaded = await served.say(MODERATOR, "/reload")
    assert isinstance(reloaded, RefreshReply) and reloaded.ok, reloaded
    assert "1 changed (VAL-R11)" in reloaded.text
    assert served.retriever.corpus.by_id["VAL-R11"].text != old_text

    back = await served.say(MODERATOR, "/rollback")
    assert isinstance(back, RefreshReply) and back.ok, back
    assert served.retriever.corpus.by_id["VAL-R11"].text == old_text
    assert "VAL-R11" in cited(await served.say(SOMEONE, question))
    statuses = {v.status for v in await served.store.versions()}
    assert {VersionStatus.LIVE, VersionStatus.ROLLED_BACK} <= statuses

    # a restart with the rolled-back files still on disk keeps serving the rollback
    again = await asyncio.to_thread(serving_retriever, served.corpus, served.data)
    restarted = Refresher(served.store, again, served.corpus, served.refresher.eval_file)
    await restarted.start()
    assert again.corpus.by_id["VAL-R11"].text == old_text


@pytest.mark.parametrize(
    "line", ["/reload", "/promote 1", "/rollback", "/versions", "/stats", "/gaps", "/announce x"]
)
async def test_only_moderators_change_or_read_versions(served: Served, line: str) -> None:
    before = served.retriever.index.build
    reply = await served.say(SOMEONE, line)
    assert isinstance(reply, Notice) and reply.kind == "refused"
    assert served.retriever.index.build == before
    assert await served.store.refresh_request(1) is None


async def test_the_command_line_reaches_the_running_bot_through_the_database(
    served: Served, tmp_path: Path
) -> None:
    shutil.copy(CORPUS_DIR / "industry-academia.md", served.corpus)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPBOT_")}
    env.update(
        PYTHONPATH=str(ROOT),
        IPBOT_DATABASE_URL=str(served.store.engine.url).replace("+aiosqlite", ""),
        IPBOT_CORPUS_DIR=str(served.corpus),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "corpus",
        "reload",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    assert "is now live" in out.decode()
    assert "JIA-D7" in {p.id for p in served.retriever.corpus.passages}
    audit = await served.store.audit_log()
    assert any(row.action == "reload" and row.actor == "cli" for row in audit)


async def test_start_serves_the_last_good_version_when_the_corpus_is_broken(
    tmp_path: Path, data_dir: Path, retriever: Retriever, store: Store
) -> None:
    corpus = small_corpus(tmp_path)
    data = fresh_data(tmp_path, data_dir)
    good = await asyncio.to_thread(serving_retriever, corpus, data)
    (corpus / "valuation.md").write_text(
        (corpus / "valuation.md").read_text().replace("kind: definition", "kind: opinion", 1)
    )
    started = await asyncio.to_thread(serving_retriever, corpus, data)
    assert started.index.build == good.index.build
    assert started.problems and "valuation.md:" in str(started.problems[0])
    assistant = Assistant(started, store, moderators=frozenset({MODERATOR.key}))
    moderator_view = assistant.about(moderator=True)
    assert moderator_view.problems and "valuation.md:" in moderator_view.problems[0]
    assert assistant.about(moderator=False).problems == ()


class CrashingEmbedder:
    """The real embedder's identity, failing midway through a build."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self.name, self.dimension = real.name, real.dimension

    def embed(self, texts: list[str], batch_size: int = 64):  # type: ignore[no-untyped-def]
        raise RuntimeError("killed during the build")


class FullDiskEmbedder(CrashingEmbedder):
    def embed(self, texts: list[str], batch_size: int = 64):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("embedder", "told"),
    [(CrashingEmbedder, "failed unexpectedly"), (FullDiskEmbedder, "the disk is full")],
)
async def test_a_failed_build_leaves_the_live_version_answering_and_says_why(
    served: Served, embedder: type[CrashingEmbedder], told: str
) -> None:
    """A crash midway, or a full disk (which the moderator can fix, so it is named)."""
    before = served.retriever.index.build
    versions = served.retriever.versions
    assert versions is not None
    versions.embedder = embedder(versions.embedder)
    shutil.copy(CORPUS_DIR / "industry-academia.md", served.corpus)
    reply = await served.say(MODERATOR, "/reload")
    assert isinstance(reply, RefreshReply) and not reply.ok
    assert told in reply.text and "live version keeps answering" in reply.text
    assert served.retriever.index.build == before
    assert cited(await served.say(SOMEONE, "How does the cost approach value a patent?"))
    assert (await served.store.live_version()).build == before  # type: ignore[union-attr]


async def restart(served: Served) -> tuple[Retriever, Refresher]:
    """The bot stops (its worker with it) and starts again on the same disk and database."""
    served.refresher.stop()
    again = await asyncio.to_thread(serving_retriever, served.corpus, served.data, True)
    refresher = Refresher(served.store, again, served.corpus, served.refresher.eval_file)
    await refresher.start()
    return again, refresher


async def run_until_checked(refresher: Refresher, store: Store) -> None:
    """Run the worker until the check that start queued, if any, is over."""
    worker = asyncio.create_task(refresher.run())
    try:
        if refresher.checking is not None:
            finished = await wait_for_request(store, refresher.checking, 300)
            assert finished.status in ("done", "failed"), finished
    finally:
        refresher.stop()
        await worker


async def test_a_corpus_changed_while_stopped_is_gated_before_it_is_served(
    served: Served,
) -> None:
    """A /reload that a crash interrupted (or files edited while the bot was down) used to be
    built at the next start before anything was served, then served without the gate."""
    before = served.retriever.index.build
    shutil.copy(CORPUS_DIR / "industry-academia.md", served.corpus)
    again, refresher = await restart(served)
    assert again.index.build == before  # the live version, at once: nothing was built first
    assert "JIA-D7" not in {p.id for p in again.corpus.passages}

    await run_until_checked(refresher, served.store)
    assert "JIA-D7" in {p.id for p in again.corpus.passages}  # the gate passed it
    assert (await served.store.live_version()).build == again.index.build  # type: ignore[union-attr]


async def test_a_worse_corpus_found_at_start_is_held_once_and_the_live_one_answers(
    served: Served,
) -> None:
    before = served.retriever.index.build
    area = served.corpus / "valuation.md"
    text = area.read_text()
    area.write_text(text[: text.index("## VAL-D2:")] + text[text.index("## VAL-D3:") :])
    again, refresher = await restart(served)
    await run_until_checked(refresher, served.store)
    assert again.index.build == before
    assert "VAL-D2" in cited(
        await Assistant(again, served.store).handle(
            Context.private(SOMEONE), "How does the cost approach value a patent?"
        )
    )
    held = [v for v in await served.store.versions() if v.status == VersionStatus.HELD]
    assert len(held) == 1

    again, refresher = await restart(served)  # the held corpus is not checked again
    assert refresher.checking is None
    assert again.index.build == before
    assert len([v for v in await served.store.versions() if v.status == VersionStatus.HELD]) == 1


async def test_a_request_nobody_waits_for_is_withdrawn_not_carried_out_later(
    served: Served,
) -> None:
    """A /rollback typed in a console without a worker, then Ctrl+C: the next bot to start
    rolled back the live version with nobody watching."""
    served.refresher.stop()  # no bot takes requests now
    live = (await served.store.live_version()).build  # type: ignore[union-attr]
    asker = Refresher(served.store, served.retriever, served.corpus, served.refresher.eval_file)
    waited = await asker.request("reload", "", "telegram:1", timeout=0.5)
    assert waited.status == "withdrawn"
    leaving = asyncio.create_task(asker.request("rollback", "", "telegram:1"))
    await asyncio.sleep(0.5)
    leaving.cancel()  # the asker goes away
    with pytest.raises(asyncio.CancelledError):
        await leaving
    kept = await served.store.request_refresh("rollback", "", "killed")  # its asker was killed
    assert await served.store.withdraw_unclaimed_refreshes(dt.timedelta(0)) == 1

    _, later = await restart(served)
    worker = asyncio.create_task(later.run())
    await asyncio.sleep(4)  # a few of the worker's looks at the queue, had anything been left
    later.stop()
    await worker
    assert (await served.store.live_version()).build == live  # type: ignore[union-attr]
    statuses = [(await served.store.refresh_request(n)).status for n in range(1, kept + 1)]  # type: ignore[union-attr]
    assert "pending" not in statuses and "done" not in statuses[-3:], statuses


async def test_a_promoted_refresh_tells_who_asked_to_be_told_once(
    tmp_path: Path, data_dir: Path, retriever: Retriever
) -> None:
    from bot.app import close_app, open_app
    from bot.settings import load_settings
    from tests.test_community import PLANTS, QUESTION, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    settings = load_settings(
        corpus_dir=corpus,
        data_dir=fresh_data(tmp_path, data_dir),
        database_url=f"sqlite:///{tmp_path / 'ipbot.db'}",
        multilingual=False,
        eval_file=tmp_path / "no-eval.yaml",  # no test questions: the moderator promotes
        moderators=[MODERATOR.key],
    )
    app = await open_app(settings)
    worker = asyncio.create_task(app.refresher.run())  # type: ignore[union-attr]
    try:
        asker = User("telegram", "77")
        asked = await app.assistant.handle_text(asker, QUESTION)
        assert isinstance(asked, AnswerReply) and not asked.answer.answered
        assert asked.question_id is not None
        await app.assistant.follow(asker, asked.question_id)

        (corpus / "valuation.md").write_text((corpus / "valuation.md").read_text() + PLANTS)
        held = await app.assistant.handle_text(MODERATOR, "/reload")
        assert isinstance(held, RefreshReply) and "no test questions" in held.text
        number = held.text.split("/promote ")[1].split()[0]
        promoted = await app.assistant.handle_text(MODERATOR, f"/promote {number}")
        assert isinstance(promoted, RefreshReply) and promoted.ok, promoted
        assert "now answered: 1" in promoted.text
        [claim] = await app.store.claim(["telegram"])
        assert claim.chat_id == "77" and claim.notice is not None
    finally:
        app.refresher.stop()  # type: ignore[union-attr]
        await worker
        await close_app(app)


async def test_a_moderator_reloads_on_telegram_and_publishes_the_new_update_from_the_summary(
    served: Served,
) -> None:
    from bot.settings import Settings
    from bot.telegram import build_application, polling
    from tests.fakes.telegram_server import FakeTelegram

    update = sorted((CORPUS_DIR / "updates").glob("*.md"))[0]
    await served.assistant.handle(Context.private(MODERATOR), "/updates")  # none yet, kept
    (served.corpus / "updates").mkdir()
    shutil.copy(update, served.corpus / "updates")
    await served.store.subscribe("telegram", "4001", "private", None)
    async with FakeTelegram() as telegram:
        settings = Settings(
            telegram_token=telegram.token, telegram_api_url=telegram.base_url, _env_file=None
        )
        async with polling(build_application(served.assistant, settings)):
            telegram.private_message("/reload", int(MODERATOR.id))
            summary = await telegram.next_call("sendMessage", timeout=120)
            assert "is now live" in summary.text, summary.text
            [button] = [
                b["text"] for row in summary.result["reply_markup"]["inline_keyboard"] for b in row
            ]
            assert button.startswith("📣 Publish:")
            telegram.press(summary.result, button, int(MODERATOR.id))
            started = await telegram.next_call("sendMessage", timeout=30)
    assert "Publishing" in started.text, started.text
    assert await served.store.is_published(update.stem)


async def test_a_database_outage_is_logged_once_not_every_two_seconds(
    retriever: Retriever, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker looks at the database every two seconds: during an outage each look logged
    a traceback of some fifty lines, into the console chat too."""
    database = tmp_path / "ipbot.db"
    store = await Store.open(f"sqlite:///{database}")
    refresher = Refresher(store, retriever, CORPUS_DIR, tmp_path / "eval.yaml")
    for file in tmp_path.glob("ipbot.db*"):  # a real fault, under the open connections
        file.write_bytes(b"not a database any more " * 400)
    worker = asyncio.create_task(refresher.run())
    await asyncio.sleep(4.5)  # three looks
    refresher.stop()
    await worker
    await store.close()

    failures = [r for r in caplog.records if r.name == "bot.refresh" and "step" in r.message]
    assert len(failures) == 1 and failures[0].exc_info is not None
