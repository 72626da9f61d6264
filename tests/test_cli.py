"""The `ipbot` command as other tools and people use it: its JSON contract and its errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from retrieval.search import Retriever

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, data_dir: Path, retriever: Retriever) -> Path:
    """Point the CLI at the session's already-built index (the retriever fixture built it)."""
    monkeypatch.setenv("IPBOT_DATA_DIR", str(data_dir))
    return data_dir


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_json_prints_the_documented_object(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["ask", "--json", "--top-k", "2", "what is a consortium agreement"], capsys
    )
    data = json.loads(out)
    assert code == 0 and data["answered"] and data["area"]["slug"] == "industry-academia"
    assert len(data["results"]) == 2 and data["results"][0]["url"].startswith("https://")


def test_ask_json_reads_one_question_per_line(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = (
        "can an AI be named as inventor?\nwhat's the weather like in rome\n\nwhat is FAIR data\n"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code, out, _ = run_cli(["ask", "--json", "-"], capsys)
    objects = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(objects) == 4
    assert [o["answered"] for o in objects] == [True, False, False, True]
    assert objects[2]["error"].startswith("Please type a question")
    assert objects[3]["area"]["slug"] == "open-science"


def test_ask_with_area_filter_and_text_output(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["ask", "--area", "valuation", "how do we price a licence?"], capsys)
    assert (
        code == 0 and "Area: IP valuation" in out and "Source:" in out and "not legal advice" in out
    )
    assert "/more" not in out and "/sources" not in out  # the chat's commands, not the CLI's


def test_unknown_area_is_one_clear_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["ask", "--area", "opne-science", "data?"], capsys)
    assert code == 2
    assert "Did you mean 'open-science'?" in err and "Traceback" not in err


def test_empty_question_gets_a_usage_hint(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["ask", "   "], capsys)
    assert code == 2 and "Please type a question" in err


def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPBOT_TOP_K", "lots")
    code, _, err = run_cli(["corpus", "validate"], capsys)
    assert code == 2 and "IPBOT_TOP_K" in err


def test_version_shows_corpus_version_and_index_date(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    version = (ROOT / "corpus" / "VERSION").read_text().strip()
    assert code == 0 and f"corpus {version}" in out and "indexed 20" in out


@pytest.mark.slow
def test_missing_model_is_one_line_naming_what_to_install(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "IPBOT_MODEL": str(tmp_path / "no-such-model"),
        "IPBOT_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "ask", "who owns results?"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert "IPBOT_MODEL" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_eval_prints_the_three_modes_side_by_side(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["eval"], capsys)
    header = out.splitlines()[1].split()
    assert code == 0 and header == ["lexical", "dense", "hybrid"]
    assert "recall@3" in out and "abstention recall" in out


def test_a_damaged_database_at_start_is_one_clear_line(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps after opening the store (pending refreshes, subscriptions) failed with the raw
    SQL error and its statement; the operator gets the usual database line instead."""
    import asyncio
    import sqlite3

    from bot.store import Store

    async def migrated(url: str) -> None:
        await (await Store.open(url)).close()

    database = tmp_path / "ipbot.db"
    asyncio.run(migrated(f"sqlite:///{database}"))
    with sqlite3.connect(database) as connection:  # damaged: a table gone
        connection.execute("DROP TABLE refresh_requests")
    monkeypatch.setenv("IPBOT_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setattr(sys, "stdin", io.StringIO("/quit\n"))
    code, _, err = run_cli(["chat"], capsys)

    assert code == 2 and "cannot use the database at start" in err and "refresh_requests" in err
    assert "[SQL:" not in err and "Traceback" not in err


def test_a_read_only_data_folder_at_start_is_named_not_the_database() -> None:
    """The news feeds could not be written in a read-only data folder, and the operator was
    told the database could not be used."""
    from bot.app import start_failure

    denied = PermissionError(13, "Permission denied", "/srv/ipbot/data/feeds/tmpab12.tmp")
    told = start_failure(denied)
    assert "/srv/ipbot/data/feeds" in told and "IPBOT_DATA_DIR" in told
    assert "database" not in told


def test_top_k_zero_is_refused_not_replaced(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["ask", "--top-k", "0", "what is FTO"], capsys)
    assert code == 2 and "--top-k must be between 1 and 50" in err


def test_updates_resend_takes_a_path_as_status_does(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resend updates/NAME.md` requeued nothing while `status updates/NAME.md` found it."""
    import asyncio

    from bot.store import Store
    from tests.test_store import publish

    url = f"sqlite:///{tmp_path / 'ipbot.db'}"

    async def one_uncertain() -> None:
        store = await Store.open(url)
        await store.subscribe("telegram", "1", "private", None)
        await publish(store)
        await store.claim(["telegram"])
        await store.recover(["telegram"], resendable=[])  # a crash mid-send: uncertain
        await store.close()

    asyncio.run(one_uncertain())
    monkeypatch.setenv("IPBOT_DATABASE_URL", url)
    code, out, _ = run_cli(["updates", "resend", "corpus/updates/2023-03-01-adopted.md"], capsys)
    assert code == 0 and out.startswith("1 uncertain deliveries queued again")


@pytest.mark.parametrize("days", ["0", "-5", "5000"])
def test_gaps_export_refuses_days_out_of_range(
    env: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    code, out, err = run_cli(["gaps", "export", "--csv", "--days", days], capsys)
    assert code == 2 and "--days must be between 1 and" in err and out == ""
