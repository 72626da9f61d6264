"""`ipbot doctor`: from outside, what /readyz checks inside a running ipbot, plus misspelt
settings, the tokens, Telegram's webhook, the database revision and the index against the
corpus on disk.

Each problem is one line, `where: what: how to fix`, for the operator who reads it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url

from bot.settings import Settings, UnknownSetting
from bot.store import Store, StoreError
from retrieval.corpus import CorpusError, load_corpus
from retrieval.embedder import INT8_SUFFIX
from retrieval.index import IndexStore, Manifest, dense_index_type
from retrieval.multilingual import multilingual_store

TIMEOUT = 10.0  # seconds for each remote check
TELEGRAM_TOKEN_FIX = "copy the token @BotFather gave into IPBOT_TELEGRAM_TOKEN"
DISCORD_TOKEN_FIX = "reset the token under Bot in the Developer Portal and set IPBOT_DISCORD_TOKEN"
BUILD_FIX = "run 'ipbot index build' ('ipbot run' builds it at start, more slowly)"
RELOAD_FIX = (
    "the running bot checks and serves it with /reload or 'ipbot corpus reload' (a restart "
    "does the same); 'ipbot index build' would serve it without the quality gate"
)


@dataclass(frozen=True)
class Problem:
    where: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.fix}"


@dataclass
class Findings:
    """Problems fail the check; notes are worth knowing but need no action."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, where: str, what: str, fix: str) -> None:
        self.problems.append(Problem(where, what, fix))


async def check_database(settings: Settings, found: Findings) -> None:
    """Reachable, and at the code's schema revision (read only: doctor migrates nothing)."""
    url = make_url(settings.database)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        found.notes.append(f"database: no SQLite file {url.database} yet; 'ipbot run' creates it")
        return
    try:
        store = await asyncio.wait_for(Store.open(settings.database, migrate=False), TIMEOUT)
    except StoreError as exc:
        what, run, command = str(exc).rpartition(": run ")
        if run:
            found.problem("database", what, f"run {command} ('ipbot run' also does it at start)")
        else:
            fix = "check IPBOT_DATABASE_URL and that the database server is running"
            found.problem("database", str(exc), fix)
        return
    except TimeoutError:
        found.problem("database", "no answer", "check IPBOT_DATABASE_URL and the network")
        return
    await store.close()


def stale_index(where: str, manifest: Manifest | None, corpus_hash: str) -> Problem | None:
    """Why the index on disk does not serve the corpus on disk, if it does not.

    Only a missing index is simply built: a changed corpus goes through the quality gate, which
    the running bot applies on /reload and at start, while `ipbot index build` would skip it.
    """
    if manifest is None:
        return Problem(where, "no index has been built", BUILD_FIX)
    if manifest.corpus_hash != corpus_hash:
        what = (
            f"built {manifest.built_at} from corpus {manifest.corpus_version}, not the one on disk"
        )
        return Problem(where, what, RELOAD_FIX)
    return None


def unfit_index(settings: Settings, manifest: Manifest, passages: int) -> Problem | None:
    """An index of this corpus, made with another model or index type than configured."""
    if manifest.model.removesuffix(f" {INT8_SUFFIX}") != settings.model:
        what = f"built with the model {manifest.model}, not IPBOT_MODEL {settings.model}"
    elif manifest.index_type != dense_index_type(settings.index_type, passages):
        what = (
            f"a {manifest.index_type} index, not what IPBOT_INDEX_TYPE {settings.index_type} makes"
        )
    else:
        return None
    return Problem("index", what, BUILD_FIX)


def check_index(settings: Settings, found: Findings) -> None:
    """The corpus loads, and each index on disk was built from it with the configured model."""
    try:
        corpus = load_corpus(settings.corpus_dir)
    except CorpusError as exc:
        found.problem(
            "corpus",
            f"{len(exc.problems)} problem(s) in {settings.corpus_dir}",
            "run 'ipbot corpus validate'",
        )
        return
    main = IndexStore(settings.data_dir, settings.index_type).current_manifest()
    problem = stale_index("index", main, corpus.hash)
    if problem is None and main is not None:
        problem = unfit_index(settings, main, len(corpus.passages))
    if problem:
        found.problems.append(problem)
    if settings.multilingual:
        second = multilingual_store(settings.data_dir).current_manifest()
        problem = stale_index("multilingual index", second, corpus.hash)
        if problem:
            found.problems.append(problem)


async def check_telegram(settings: Settings, found: Findings) -> None:
    """The token (getMe) and, for a webhook, what Telegram says of its last delivery."""
    from telegram import Bot
    from telegram.error import Forbidden, InvalidToken, TelegramError

    from bot.telegram import file_url_for

    token = settings.telegram_token.get_secret_value()  # type: ignore[union-attr]
    bot = Bot(
        token,
        base_url=settings.telegram_api_url,
        base_file_url=file_url_for(settings.telegram_api_url),
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            await bot.initialize()  # getMe
            info = await bot.get_webhook_info()
    except (InvalidToken, Forbidden):
        found.problem("telegram", "Telegram rejected the token", TELEGRAM_TOKEN_FIX)
        return
    except (TelegramError, TimeoutError) as exc:
        found.problem(
            "telegram",
            f"cannot reach the Bot API ({exc})",
            "check the network and IPBOT_TELEGRAM_API_URL",
        )
        return
    finally:
        await bot.shutdown()
    wanted = settings.telegram_webhook_url
    if wanted is None and info.url:
        found.problem(
            "telegram",
            f"a webhook is set ({info.url}) but ipbot polls",
            "'ipbot run' removes it at start; if another deployment uses it, give each its own bot",
        )
    elif wanted is not None and info.url and info.url != wanted:
        found.problem(
            "telegram",
            f"the webhook points at {info.url}, not IPBOT_TELEGRAM_WEBHOOK_URL",
            "stop the other deployment using this bot; 'ipbot run' sets the webhook at start",
        )
    elif wanted is not None and info.last_error_message:
        when = info.last_error_date or dt.datetime.now(dt.UTC)
        found.problem(
            "telegram webhook",
            f"Telegram's last delivery failed at {when:%Y-%m-%d %H:%M} UTC ({info.last_error_message})",
            f"check that {wanted} reaches IPBOT_HTTP_PORT through the proxy, with a valid certificate",
        )
    elif wanted is not None and not info.url:
        found.notes.append("telegram: no webhook set yet; 'ipbot run' sets it at start")


@contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Only errors from these loggers while inside: on making a client, discord.py warns that
    voice needs PyNaCl and davey and that the guilds intent is off, none of it a finding."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def check_discord(settings: Settings, found: Findings) -> None:
    """The token (the current user) and whether the message content intent is granted."""
    import discord

    from bot.discord import point_library_at

    point_library_at(settings)
    with quiet("discord.client", "discord.state"):
        client = discord.Client(intents=discord.Intents.none())
    try:
        async with asyncio.timeout(TIMEOUT):
            await client.login(settings.discord_token.get_secret_value())  # type: ignore[union-attr]
        flags = client.application_flags
        if not (flags.gateway_message_content or flags.gateway_message_content_limited):
            found.notes.append(
                "discord: the message content intent is off, so follow-ups in threads need a "
                "mention (Developer Portal, Bot, Privileged Gateway Intents)"
            )
    except discord.LoginFailure:
        found.problem("discord", "Discord rejected the token", DISCORD_TOKEN_FIX)
    except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
        found.problem(
            "discord",
            f"cannot reach the API ({type(exc).__name__})",
            "check the network and IPBOT_DISCORD_API_URL",
        )
    finally:
        await client.close()


async def check_running(settings: Settings, found: Findings) -> None:
    """Ask a running ipbot's /readyz (IPBOT_HTTP_PORT) what it sees from inside."""
    if settings.http_port is None:
        return
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host
    url = f"http://{host}:{settings.http_port}/readyz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
            session.get(url) as response,
        ):
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        found.notes.append(f"running ipbot: nothing answers on {url} (not started?)")
        return
    for name in body.get("failed", []):
        state = body.get("checks", {}).get(name, "failed")
        found.problem(f"running ipbot ({name})", str(state), "see the log of 'ipbot run'")


async def diagnose(settings: Settings, unknown: Sequence[UnknownSetting] = ()) -> Findings:
    """Every check, each independent of the others' outcome; `unknown` are the IPBOT_ names
    no setting reads (bot.settings.unknown_settings), likely typos."""
    found = Findings()
    for setting in unknown:
        found.problem("settings", setting.what, setting.fix)
    if settings.telegram_token is None and settings.discord_token is None:
        found.problem(
            "settings", "no chat token is set", "set IPBOT_TELEGRAM_TOKEN or IPBOT_DISCORD_TOKEN"
        )
    check_index(settings, found)
    await check_database(settings, found)
    if settings.telegram_token is not None:
        await check_telegram(settings, found)
    if settings.discord_token is not None:
        await check_discord(settings, found)
    await check_running(settings, found)
    return found


def report(found: Findings) -> tuple[str, int]:
    """The lines to print and the exit code: 1 if anything needs fixing."""
    lines = [str(problem) for problem in found.problems]
    lines += [f"note: {note}" for note in found.notes]
    if found.problems:
        lines.append(f"{len(found.problems)} problem(s) found.")
        return "\n".join(lines), 1
    lines.append("All clear: settings, database, index and platforms are ready.")
    return "\n".join(lines), 0
