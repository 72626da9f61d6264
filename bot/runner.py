"""`ipbot run`: start every adapter whose token is configured, sharing one assistant and sender.

With no token set, the console chat is the embedded default. SIGTERM and SIGINT stop the
sender first (sends in flight finish and are recorded), then the adapters cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from bot.app import App, close_app, configured_outlets, open_app, running_sender
from bot.assistant import Assistant
from bot.settings import Settings
from retrieval.index import Progress

log = logging.getLogger(__name__)
Adapter = Callable[[Assistant, Settings, asyncio.Event], Coroutine[Any, Any, None]]


def configured_adapters(settings: Settings) -> dict[str, Adapter]:
    """The platform adapters that have a token; imported only when used."""
    adapters: dict[str, Adapter] = {}
    if settings.telegram_token:
        from bot.telegram import run_telegram

        adapters["Telegram"] = run_telegram
    if settings.discord_token:
        from bot.discord import run_discord

        adapters["Discord"] = run_discord
    return adapters


def run_bots(settings: Settings, progress: Progress) -> int:
    asyncio.run(main(settings, progress))
    return 0


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
            await run_console(app.assistant)
            return
        progress(f"Starting: {', '.join(adapters)}. Stop with Ctrl+C or SIGTERM.")
        await serve(app, adapters)
    finally:
        await close_app(app)


async def serve(app: App, adapters: dict[str, Adapter]) -> None:
    """Run the adapters and the sender until a stop signal, or until an adapter fails."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with running_sender(app):
        tasks = {
            asyncio.create_task(adapter(app.assistant, app.settings, stop), name=name)
            for name, adapter in adapters.items()
        }
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # one adapter ended (a stop signal, or a fatal error): stop the others too
        if app.sender is not None:
            app.sender.stop()  # finish sends in flight before the adapters close
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception():
            log.error("%s adapter stopped: %s", task.get_name(), task.exception())
            raise task.exception()  # type: ignore[misc]
    log.info("ipbot stopped")
