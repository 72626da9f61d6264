"""`ipbot run`: start every adapter whose token is configured, sharing one assistant and sender.

With no token set, the console chat is the embedded default on a terminal. Each platform is
supervised on its own: one that fails is restarted with backoff while the others keep
answering; one that can no longer work (its token rejected) ends ipbot with a non-zero exit,
so that a supervisor restarts it. SIGTERM and SIGINT stop the sender first (sends in flight
finish and are recorded), then the adapters, then the HTTP server (IPBOT_HTTP_PORT), and
exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bot.app import App, close_app, configured_outlets, open_app, running_sender
from bot.assistant import Assistant
from bot.http import WebhookSlot, http_front
from bot.leadership import GATEWAY_JOB, POLLING_JOB, while_leading
from bot.settings import Settings, SettingsError
from retrieval.index import Progress

log = logging.getLogger(__name__)
Adapter = Callable[[Assistant, Settings, asyncio.Event], Coroutine[Any, Any, None]]
RESTART_FIRST, RESTART_MAX = 1.0, 60.0  # seconds between restarts of a failing platform
STABLE_AFTER = 60.0  # seconds of service after which a failure counts as the first again
STOP_GRACE = 10.0  # seconds a platform gets to stop; systemd kills after TimeoutStopSec=30


def configured_adapters(
    settings: Settings, webhook: WebhookSlot | None = None
) -> dict[str, Adapter]:
    """The platform adapters that have a token; imported only when used.

    With a `webhook` slot (IPBOT_TELEGRAM_WEBHOOK_URL), Telegram receives updates there
    instead of polling.
    """
    adapters: dict[str, Adapter] = {}
    if settings.telegram_token:
        from bot.telegram import run_telegram

        # polling: Telegram serves one getUpdates per bot; a webhook reaches every replica
        adapters["Telegram"] = (
            functools.partial(run_telegram, webhook=webhook)
            if webhook is not None
            else leading(POLLING_JOB, run_telegram)
        )
    if settings.discord_token:
        from bot.discord import run_discord

        adapters["Discord"] = leading(GATEWAY_JOB, run_discord)
    return adapters


def leading(name: str, adapter: Adapter) -> Adapter:
    """An adapter that runs in one replica at a time: Discord allows one gateway connection
    per bot (per shard), so the replicas that do not hold it stand by to take over."""

    async def run(assistant: Assistant, settings: Settings, stop: asyncio.Event) -> None:
        async def connected(end: asyncio.Event) -> None:
            await adapter(assistant, settings, end)

        await while_leading(assistant.store, name, connected, stop)

    return run


def run_bots(settings: Settings, progress: Progress) -> int:
    if not configured_adapters(settings) and not sys.stdin.isatty():
        # under a supervisor a console chat would read end-of-input and exit 0 at once
        raise SettingsError(
            "no chat token is set: set IPBOT_TELEGRAM_TOKEN or IPBOT_DISCORD_TOKEN "
            "(the console chat needs a terminal; 'ipbot chat' reads piped input)"
        )
    with one_process_per_sqlite_file(settings):
        asyncio.run(main(settings, progress))
    return 0


@contextlib.contextmanager
def one_process_per_sqlite_file(settings: Settings) -> Iterator[None]:
    """SQLite serves one `ipbot run`: a second on the same file would double every broadcast.

    The lock is the operating system's (released when the process dies, however it dies);
    short commands such as `ipbot updates publish` do not take it and work beside the bot.
    """
    url = make_url(settings.database)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield
        return
    path = Path(f"{url.database}.run-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SettingsError(
                f"another `ipbot run` is already using {url.database}; SQLite serves one "
                "process: stop the other one, or set IPBOT_DATABASE_URL to a PostgreSQL "
                "database to run several"
            ) from None
        yield


def quiet_for_the_console(settings: Settings) -> None:
    """The console chat shares the terminal with the log: a service's INFO line per question
    would sit between the answers. Warnings and errors still show; a log level set on purpose
    (IPBOT_LOG_LEVEL, --debug) stays."""
    root = logging.getLogger()
    if "log_level" not in settings.model_fields_set and root.level == logging.INFO:
        root.setLevel(logging.WARNING)  # the default level; --debug has set DEBUG


async def main(settings: Settings, progress: Progress) -> None:
    adapters = configured_adapters(settings)
    app = await open_app(settings, progress, configured_outlets(settings))
    try:
        if not adapters:
            from bot.console import run_console

            progress(
                "No chat token is set (IPBOT_TELEGRAM_TOKEN, IPBOT_DISCORD_TOKEN): "
                "starting the console chat."
            )
            quiet_for_the_console(settings)
            async with running_sender(app):  # /reload, updates and housekeeping, as in `chat`
                await run_console(app.assistant)
            return
        async with http_front(app) as front:  # closed after the adapters and the sender
            adapters = configured_adapters(settings, front.telegram if front else None)
            progress(f"Starting: {', '.join(adapters)}. Stop with Ctrl+C or SIGTERM.")
            await serve(app, adapters)
    finally:
        await close_app(app)


async def serve(app: App, adapters: dict[str, Adapter]) -> None:
    """Run the adapters and the sender until a stop signal, or until a platform cannot work."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with running_sender(app):
        tasks = [
            asyncio.create_task(
                supervise(name, adapter, app.assistant, app.settings, stop), name=name
            )
            for name, adapter in adapters.items()
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # a stop signal, or a platform that cannot work: stop the others too
        app.stop_sending()  # sends in flight finish while the adapters close
        _, stuck = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in stuck:  # e.g. still connecting to an unreachable host
            log.warning("%s: not stopped after %.0f s; cancelled", task.get_name(), STOP_GRACE)
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    fatal = [r for r in results if isinstance(r, Exception)]
    if fatal:
        raise fatal[0]  # cli prints it as the one `ipbot: error:` line
    log.info("ipbot stopped")


async def supervise(
    name: str, adapter: Adapter, assistant: Assistant, settings: Settings, stop: asyncio.Event
) -> None:
    """Keep one platform answering until `stop`, restarting it with backoff when it fails.

    A SettingsError (the platform rejected its token or intents) is final: it propagates.
    """
    loop = asyncio.get_running_loop()
    wait = RESTART_FIRST
    while not stop.is_set():
        started = loop.time()
        try:
            await adapter(assistant, settings, stop)
        except SettingsError:
            raise
        except Exception as exc:
            if stop.is_set():
                log.warning("%s: error while stopping: %r", name, exc)
                return
            if loop.time() - started > STABLE_AFTER:
                wait = RESTART_FIRST
            log.warning(
                "%s: stopped working (%s: %s); restarting in %.0f s, other platforms keep answering",
                name,
                type(exc).__name__,
                exc,
                wait,
            )
        else:
            if stop.is_set():
                return
            log.warning("%s: stopped unexpectedly; restarting in %.0f s", name, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        wait = min(wait * 2, RESTART_MAX)
