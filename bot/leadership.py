"""Jobs that must run in one process at a time among replicas: the broadcast sender, the
Discord gateway connection, Telegram's webhook and menu set-up.

Each holds a lease (a PostgreSQL advisory lock, see `Store.lease`); the other replicas try
again every few seconds and one of them takes over when the holder dies or loses its
database connection. On SQLite there is one process, which holds every lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from bot.store import Store

log = logging.getLogger(__name__)
GATEWAY_JOB = "discord-gateway"  # Discord allows one gateway connection per bot and shard
POLLING_JOB = "telegram-polling"  # Telegram serves one getUpdates at a time per bot
RETRY_SECONDS = 3.0  # how often a standby replica tries to take a job over
Job = Callable[[asyncio.Event], Awaitable[None]]  # runs until the event is set


class Leases:
    """Which jobs this process holds now: /readyz does not expect a standby to be connected."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    @property
    def running(self) -> list[str]:
        return sorted(self.held)

    def standby(self, platform: str, polling: bool) -> bool:
        """Whether this process leaves the platform's one connection to another replica."""
        job = {"discord": GATEWAY_JOB, "telegram": POLLING_JOB if polling else None}[platform]
        return job is not None and job not in self.held


LEASES = Leases()


async def while_leading(
    store: Store, name: str, job: Job, stop: asyncio.Event, retry: float = RETRY_SECONDS
) -> None:
    """Run `job` whenever this process holds the `name` lease, until `stop` is set.

    The job gets an event that is set on `stop` or when the lease is lost; it must then end
    promptly, since another replica may already be taking over. The job's own failures
    propagate (after the lease is let go), for the caller's supervision to handle.
    """
    while not stop.is_set():
        failure: BaseException | None = None
        try:
            async with store.lease(name) as lost:
                if lost is not None:
                    failure = await _hold(name, job, stop, lost)
        except Exception as exc:  # the database is unreachable: a standby waits like any other
            log.warning("%s: cannot take the lease (%s); trying again", name, type(exc).__name__)
        if failure is not None:
            raise failure
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry)


async def _hold(
    name: str, job: Job, stop: asyncio.Event, lost: asyncio.Event
) -> BaseException | None:
    log.info("%s: this process runs it", name)
    LEASES.held.add(name)
    end = asyncio.Event()
    relay = asyncio.create_task(first_of(stop, lost))
    relay.add_done_callback(lambda _: end.set())
    try:
        await job(end)
    except Exception as exc:
        return exc
    finally:
        LEASES.held.discard(name)
        relay.cancel()
    if lost.is_set() and not stop.is_set():
        log.warning("%s: lease lost; another process may take it over", name)
    return None


async def first_of(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@contextlib.asynccontextmanager
async def once_among_replicas(store: Store, name: str, config: str) -> AsyncIterator[bool]:
    """A set-up step that one replica performs once per `config` (a digest of what it sets):
    yields whether this one should; the step is recorded as done when the block succeeds.

    Replicas starting together skip it while another holds it; a restart with the same
    configuration skips it too.
    """
    async with store.lease(name) as lost:
        due = lost is not None and await store.meta(name) != config
        yield due
        if due:
            await store.set_meta(name, config)
