"""Micro-batching: concurrent requests share one engine call.

Each request puts its item on an asyncio queue and awaits its result. One collector task takes the
first waiting item, then keeps collecting until ``max_batch`` items are in hand or ``max_wait_s``
has passed since that first item arrived (an item that already waited while the engine was busy
does not wait again), and runs the whole batch in one call on a single engine thread, off the event
loop. With one request at a time the cost is at most ``max_wait_s`` of added latency; under load
the engine sees batches instead of single images.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Batched(Generic[Result]):
    """One item's result and the batch it ran in."""

    result: Result
    batch_size: int
    queued_s: float  # from submit until its batch started
    run_s: float  # the batch's engine call


@dataclass
class BatchStats:
    """What the collector has done so far."""

    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    sizes: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "images": self.items,
                "failed_batches": self.failed_batches,
                "largest_batch": max(self.sizes, default=0),
                "mean_batch": round(self.items / self.batches, 2) if self.batches else 0.0,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


@dataclass
class _Waiting(Generic[Item]):
    item: Item
    future: asyncio.Future
    arrived: float


class MicroBatcher(Generic[Item, Result]):
    """Collects submitted items into batches for ``run_batch`` (called on one worker thread)."""

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], max_batch: int,
                 max_wait_s: float):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_s at least 0")
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max_batch, max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._task: asyncio.Task | None = None
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    def start(self) -> None:
        """Start the collector on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop collecting; requests still waiting get a cancellation."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._engine.shutdown(wait=True)

    async def submit(self, item: Item) -> Batched[Result]:
        """Queue ``item`` and wait for its result (the batch's exception if the call failed)."""
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(item, future, time.perf_counter()))
        return await future

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].arrived + self.max_wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [w for w in batch if not w.future.done()]  # a client that went away
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._engine, self.run_batch,
                                                 [w.item for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function returned {len(results)} results for "
                                   f"{len(batch)} items")
        except Exception as exc:
            self.stats.failed_batches += 1
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        ran = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.sizes[len(batch)] += 1
        for waiting, result in zip(batch, results):
            if not waiting.future.done():
                waiting.future.set_result(Batched(result, len(batch), started - waiting.arrived,
                                                  ran))
