"""Batches that form while the model is busy: a lone request runs at once, a busy replica runs full batches.

Why not `@serve.batch`: its loop (Ray 2.60, `ray/serve/batching.py` `_process_batches`) takes a batch off
the queue as soon as one item is there and parks it behind the `max_concurrent_batches` semaphore, then
takes the next. With no batch wait every request becomes its own batch of one: at 32 concurrent clients the
replica ran 300 forwards of batch 1, each request queueing ~1.3 s (benchmarks/README.md, "where the time
goes"). A batch wait would fill batches but make every lone request wait for it. Here the one consumer takes
what has queued only when the previous forward has finished, so the queue itself is the batch window.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    size: int
    future: asyncio.Future[Result]


class DrainingBatcher(Generic[Item, Result]):
    """Runs `handle` on everything that queued during the previous call, up to `max_size` (as `size_of` counts).

    One call at a time; `handle` returns one result per item, in order. Must be used from one event loop.
    """

    def __init__(
        self,
        handle: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        max_size: int,
        size_of: Callable[[Item], int] = lambda _: 1,
        wait_s: float = 0.0,
    ) -> None:
        self.handle, self.max_size, self.size_of, self.wait_s = handle, max_size, size_of, wait_s
        self._queue: deque[_Waiting[Item, Result]] = deque()
        self._arrived = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        size = self.size_of(item)
        if size > self.max_size:
            raise ValueError(f"an item of size {size} does not fit in a batch of {self.max_size}")
        if self._consumer is None or self._consumer.done():
            # Started on first use, so it runs on the loop that serves the requests.
            self._consumer = asyncio.create_task(self._consume())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(item, size, future))
        self._arrived.set()
        return await future

    def _next_batch(self) -> list[_Waiting[Item, Result]]:
        batch: list[_Waiting[Item, Result]] = []
        total = 0
        while self._queue and total + self._queue[0].size <= self.max_size:
            waiting = self._queue.popleft()
            if waiting.future.done():  # its client gave up: no forward for it
                continue
            batch.append(waiting)
            total += waiting.size
        return batch

    async def _consume(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                if self.wait_s:  # an idle replica may give a batch time to fill (default: none)
                    await asyncio.sleep(self.wait_s)
            batch = self._next_batch()
            if not batch:
                continue
            try:
                results = await self.handle([w.item for w in batch])
            except Exception as exc:  # the batch's callers get the error; the consumer goes on
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(result)
