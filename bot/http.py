"""The HTTP side of `ipbot run`: /healthz, /readyz, /metrics, the Atom feeds and Telegram's
webhook, on one small aiohttp server sharing the bot's event loop (IPBOT_HTTP_PORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot import metrics
from bot.leadership import LEASES
from bot.subscriptions import refresh_feeds

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)

CONNECTED_WITHIN = 120.0  # seconds: a platform silent for longer is not connected
PING_TIMEOUT = 3.0  # seconds the database gets to answer a readiness check
FEED_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\.xml")
Receiver = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebhookSlot:
    """Where Telegram posts updates: the adapter attaches its receiver while it runs.

    While it is detached (starting, restarting, stopping) requests get 503, so Telegram
    keeps the update and tries again rather than losing it.
    """

    def __init__(self, path: str):
        self.path = path
        self.receiver: Receiver | None = None

    def attach(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def detach(self) -> None:
        self.receiver = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.receiver is None:
            return web.json_response({"error": "not receiving updates now"}, status=503)
        return await self.receiver(request)


def configured_platforms(app: App) -> list[str]:
    """The platforms /readyz expects to be connected: those with a token."""
    settings = app.settings
    return [
        name
        for name, token in (
            ("telegram", settings.telegram_token),
            ("discord", settings.discord_token),
        )
        if token is not None
    ]


async def readiness(
    app: App, platforms: list[str], liveness: metrics.Liveness = metrics.LIVENESS
) -> dict[str, str]:
    """Each check by name, "ok" or what is wrong."""
    checks = {"index": "ok" if app.retriever.index.manifest.passage_ids else "empty"}
    try:
        await asyncio.wait_for(app.store.ping(), PING_TIMEOUT)
        checks["database"] = "ok"
    except Exception as exc:  # whatever the driver raises, the answer is the same: not ready
        checks["database"] = f"unreachable ({type(exc).__name__})"
    for platform in platforms:
        since = liveness.silent_for(platform)
        if app.store.shared and LEASES.standby(platform, app.settings.telegram_webhook_url is None):
            checks[platform] = "standby"  # another replica holds its one connection
        elif since is None:
            checks[platform] = "not connected yet"
        elif since > CONNECTED_WITHIN:
            checks[platform] = f"no contact for {since:.0f} s"
        else:
            checks[platform] = "ok"
    return checks


@dataclass
class Front:
    """The routes of the HTTP server, over one running app."""

    app: App
    telegram: WebhookSlot | None = None
    liveness: metrics.Liveness = metrics.LIVENESS
    feeds_written_from: int | None = None  # published updates the feed files show

    def routes(self) -> web.Application:
        http = web.Application()
        http.router.add_get("/healthz", self.healthz)
        http.router.add_get("/readyz", self.readyz)
        http.router.add_get("/metrics", self.prometheus)
        http.router.add_get("/feeds/{name}", self.feed)
        if self.telegram is not None:
            http.router.add_post(self.telegram.path, self.telegram.handle)
        return http

    async def healthz(self, request: web.Request) -> web.Response:
        """The process answers: a supervisor's liveness probe."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Index loaded, database reachable, each configured platform heard from recently."""
        checks = await readiness(self.app, configured_platforms(self.app), self.liveness)
        failed = [name for name, state in checks.items() if state not in ("ok", "standby")]
        body = {"ready": not failed, "failed": failed, "checks": checks, "runs": LEASES.running}
        return web.json_response(body, status=503 if failed else 200)

    async def prometheus(self, request: web.Request) -> web.Response:
        """Every metric in Prometheus' text format, the state gauges read now."""
        index = self.app.retriever.index.manifest
        corpus = self.app.retriever.corpus
        metrics.describe_index(corpus.version, corpus.hash, index.model, index.built_at)
        try:
            metrics.set_pending(await asyncio.wait_for(self.app.store.pending_by_platform(), 3))
        except Exception as exc:  # the other figures still help while the database is down
            log.warning("metrics: cannot count the outbox (%s)", type(exc).__name__)
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def feed(self, request: web.Request) -> web.StreamResponse:
        """An Atom feed written by bot/feeds.py (all.xml, or one per area)."""
        name = request.match_info["name"]
        if not FEED_NAME.fullmatch(name) or not self.app.settings.feeds:
            raise web.HTTPNotFound()
        await self._follow_published()
        path = self.app.settings.data_dir / "feeds" / name
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "application/atom+xml"})

    async def _follow_published(self) -> None:
        """Feed files live in this replica's data folder and are written where an update is
        published: one published by another replica (or `ipbot updates publish` elsewhere)
        is written here once the database holds more published updates than the files show.
        With the database away, the files as they are."""
        try:
            published = await self.app.store.published_count()
            if published != self.feeds_written_from:
                folder = self.app.settings.data_dir / "feeds"
                await refresh_feeds(self.app.store, folder, self.app.retriever.corpus)
                self.feeds_written_from = published
        except Exception as exc:
            log.warning("feeds: cannot follow the published updates (%s)", type(exc).__name__)


@contextlib.asynccontextmanager
async def serving(front: Front, host: str, port: int) -> AsyncIterator[int]:
    """Serve the routes on host:port (0: any free port) until the block ends; yields the port."""
    runner = web.AppRunner(
        front.routes(), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]
        log.info("HTTP: serving /healthz, /readyz, /metrics, /feeds/ on %s:%d", host, bound)
        yield int(bound)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def http_front(app: App) -> AsyncIterator[Front | None]:
    """The HTTP server of `ipbot run` when IPBOT_HTTP_PORT is set; None otherwise."""
    settings = app.settings
    if settings.http_port is None:
        yield None
        return
    path = settings.telegram_webhook_path
    front = Front(app, WebhookSlot(path) if path else None)
    async with serving(front, settings.http_host, settings.http_port):
        yield front
