"""`ipbot doctor` as an operator runs it before and beside `ipbot run`, against the fake
platforms: a good set-up gets an all-clear, each problem one line saying how to fix it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.cli import main
from bot.doctor import diagnose, report
from bot.settings import Settings
from bot.store import Store
from retrieval.search import Retriever
from tests.conftest import CORPUS_DIR, ipbot_env
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.slow
WEBHOOK_URL = "https://ipbot.example.org/telegram/ipbot"


@pytest_asyncio.fixture(loop_scope="function")
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def database(tmp_path: Path) -> str:
    """A database at the code's schema, as `ipbot run` leaves it."""
    url = f"sqlite:///{tmp_path / 'ipbot.db'}"
    store = await Store.open(url)
    await store.close()
    return url


def settings_for(data_dir: Path, database: str, telegram: FakeTelegram, **more: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        corpus_dir=CORPUS_DIR,
        database_url=database,
        telegram_token=telegram.token,
        telegram_api_url=telegram.base_url,
        _env_file=None,
        **more,  # type: ignore[arg-type]
    )


async def test_a_good_setup_gets_an_all_clear_and_exit_0(
    retriever: Retriever, data_dir: Path, database: str, telegram: FakeTelegram
) -> None:
    text, code = report(await diagnose(settings_for(data_dir, database, telegram)))
    assert code == 0, text
    assert text.splitlines()[-1].startswith("All clear")


async def test_a_rejected_telegram_token_is_reported_with_its_fix_and_no_secret(
    retriever: Retriever,
    data_dir: Path,
    database: str,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    revoked = "7000000001:AAnotTheTokenTelegramKnowsAnyLonger"
    for name, value in {
        "IPBOT_DATA_DIR": str(data_dir),
        "IPBOT_CORPUS_DIR": str(CORPUS_DIR),
        "IPBOT_DATABASE_URL": database,
        "IPBOT_TELEGRAM_TOKEN": revoked,
        "IPBOT_TELEGRAM_API_URL": telegram.base_url,
    }.items():
        monkeypatch.setenv(name, value)

    code = await asyncio.to_thread(main, ["doctor"])  # its own event loop, as from a shell
    out, err = capsys.readouterr()

    assert code == 1
    assert (
        "telegram: Telegram rejected the token: copy the token @BotFather gave into "
        "IPBOT_TELEGRAM_TOKEN"
    ) in out.splitlines()
    assert revoked.split(":")[1] not in out + err


async def test_a_rejected_discord_token_is_reported_with_its_fix(
    retriever: Retriever, data_dir: Path, database: str, telegram: FakeTelegram
) -> None:
    discord = FakeDiscord(reject_token=True)
    await discord.start()
    try:
        settings = settings_for(
            data_dir,
            database,
            telegram,
            discord_token="fake-discord-token",
            discord_api_url=discord.api_url,
            discord_gateway_url=discord.gateway_url,
        )
        found = await diagnose(settings)
    finally:
        await discord.stop()
    assert [(p.where, p.what) for p in found.problems] == [
        ("discord", "Discord rejected the token")
    ]


async def test_a_webhook_telegram_cannot_deliver_to_is_reported(
    retriever: Retriever, data_dir: Path, database: str, telegram: FakeTelegram
) -> None:
    telegram.webhook = {"url": WEBHOOK_URL}
    telegram.webhook_error = "Connection timed out"
    settings = settings_for(
        data_dir,
        database,
        telegram,
        telegram_webhook_url=WEBHOOK_URL,
        telegram_webhook_secret="webhook-secret-only-telegram-knows",
        http_port=8443,
    )
    [problem] = (await diagnose(settings)).problems
    assert problem.where == "telegram webhook" and "Connection timed out" in problem.what
    assert WEBHOOK_URL in problem.fix


async def test_an_index_built_from_another_corpus_and_an_old_schema_are_reported(
    retriever: Retriever, data_dir: Path, telegram: FakeTelegram, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS_DIR, corpus)
    edited = corpus / "awareness-raising.md"
    edited.write_text(edited.read_text().replace("research", "research work", 1))
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = await Store.open(url)
    async with store.engine.begin() as connection:
        await connection.exec_driver_sql("DELETE FROM alembic_version")  # as before migrating
    await store.close()

    settings = settings_for(data_dir, url, telegram).model_copy(update={"corpus_dir": corpus})
    found = await diagnose(settings)

    where = {p.where: p for p in found.problems}
    assert set(where) == {"index", "multilingual index", "database"}, found.problems
    through_the_gate = (
        "the running bot checks and serves it with /reload or 'ipbot corpus reload' (a restart "
        "does the same); 'ipbot index build' would serve it without the quality gate"
    )
    assert where["index"].fix == through_the_gate
    assert where["multilingual index"].fix == through_the_gate
    assert "at nothing" in where["database"].what and "ipbot db upgrade" in where["database"].fix


async def test_only_a_missing_index_is_to_be_built(
    database: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path / "no-index-yet", database, telegram)
    found = await diagnose(settings)
    fixes = {p.where: p.fix for p in found.problems if p.what == "no index has been built"}
    assert fixes == {
        "index": "run 'ipbot index build' ('ipbot run' builds it at start, more slowly)",
        "multilingual index": "run 'ipbot index build' ('ipbot run' builds it at start, more slowly)",
    }, found.problems


async def test_a_misspelt_setting_is_a_problem_with_the_name_meant_and_no_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.upper().startswith("IPBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IPBOT_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / ".env").write_text("IPBOT_TELEGRAM_TOKN=7000000001:AAsecretPartOfTheToken\n")

    code = await asyncio.to_thread(main, ["doctor"])
    out, err = capsys.readouterr()

    assert code == 1
    assert (
        "settings: IPBOT_TELEGRAM_TOKN in .env is not an ipbot setting, so it is ignored: "
        "did you mean IPBOT_TELEGRAM_TOKEN?"
    ) in out.splitlines()
    assert "IPBOT_TELEGRAM_TOKN" not in err, "listed once, among the problems, not logged too"
    assert "AAsecretPartOfTheToken" not in out + err


async def test_doctor_prints_its_findings_and_no_chat_library_warnings(tmp_path: Path) -> None:
    discord = FakeDiscord()
    await discord.start()
    try:
        env = ipbot_env(
            tmp_path / "data",
            IPBOT_DISCORD_TOKEN="fake-discord-token",
            IPBOT_DISCORD_API_URL=discord.api_url,
            IPBOT_DISCORD_GATEWAY_URL=discord.gateway_url,
        )
        doctor = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "bot.cli", "doctor"),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(doctor.communicate(), 120)
    finally:
        await discord.stop()

    assert any(call.path == "/users/@me" for call in discord.calls), "the token was not checked"
    assert b"index: no index has been built" in out
    assert err.decode() == "", "discord.py's warnings (voice, intents) are not doctor's findings"
