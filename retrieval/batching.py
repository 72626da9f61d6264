"""Calls that arrive together, served as one batch: the model's micro-batches, the store's
group commit. One batch costs about as much as one call, so a busy bot does more per second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
_Batch = list[tuple[Any, asyncio.Future[Any]]]  # items with their callers' futures


class Batcher(Generic[Item, Result]):
    """Collects the items submitted while a batch runs and passes them to `run` together.

    Each caller gets its own result. If a batch fails, its items are run one by one, so only
    the item that fails gets the failure. `max_batch` bounds a batch: smaller batches let the
    callers of the first one carry on while the next one runs. With `in_flight=2` the next
    batch is handed over before the current one returns, so that a worker thread goes from
    one batch to the next without waiting for the event loop.
    """

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[Iterable[Result]]],
        max_batch: int = 64,
        in_flight: int = 1,
    ):
        self._run = run
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._launch_soon = False

    async def submit(self, item: Item) -> Result:
        """The result of one item, computed together with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._launch()  # a full batch need not wait for the rest of this tick
        elif not self._launch_soon:
            self._launch_soon = True
            loop.call_soon(self._launch_waiting)  # items submitted in the same tick join
        return await future

    async def flush(self) -> None:
        """Return once everything submitted so far has run (a clean stop calls this)."""
        while self._pending or self._running:
            if self._running:
                await asyncio.wait(self._running)
            else:
                await asyncio.sleep(0)  # a batch is about to start

    def _launch(self) -> None:
        """Start batches of what is waiting, up to `in_flight` at a time."""
        while self._pending and len(self._running) < self._in_flight:
            batch = self._pending[: self._max_batch]
            self._pending = self._pending[self._max_batch :]
            task = asyncio.create_task(self._settle(batch, self._run([i for i, _ in batch])))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _launch_waiting(self) -> None:
        self._launch_soon = False
        self._launch()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._launch()  # what arrived meanwhile has waited long enough to be one batch

    async def _settle(self, batch: _Batch, results: Awaitable[Iterable[Result]]) -> None:
        """Give each caller its result; if the batch failed, run its items one by one."""
        try:
            done = await results
        except Exception:  # one bad item must not fail the others: run each alone
            for item, future in batch:
                await self._run_alone(item, future)
            return
        for (_, future), result in zip(batch, done, strict=True):
            if not future.done():
                future.set_result(result)

    async def _run_alone(self, item: Item, future: asyncio.Future[Result]) -> None:
        try:
            (result,) = await self._run([item])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)
