"""DynamicBatcher: a bounded per-model queue that merges concurrent requests into one call.

Dispatch rule ("greedy", as Triton and TF Serving batch by default):

* When the runner is idle, whatever is queued runs at once: a lone request never waits
  for company, so it pays no added latency.
* Requests that arrive while a batch runs queue up and form the next batch, up to
  ``max_batch_size`` items of one shape key (only compatible requests are merged).
* ``max_wait_ms`` applies only when a batch already has company but is not full: the
  dispatcher then waits up to ``max_wait_ms`` after the oldest item for it to fill.

The runner executes on the event loop's thread (``executor=None``: no thread hop, the
fastest on one core, and the loop gathers the requests that arrive meanwhile) or in an
executor (one hop per batch, never per request; pays off with spare cores). A full queue
raises Overloaded at once; an item whose deadline passed before dispatch gets
DeadlineExceeded and is never run; a cancelled waiter's item is dropped. If a batch call
fails, each item is retried alone, so one poisoned request fails alone.

Imports: config, errors, _utils.clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Generic, TypeVar

from shipyard._utils.clock import Clock, MonotonicClock
from shipyard.config import BatchingSettings
from shipyard.errors import DeadlineExceeded, InferenceError, Overloaded, ShipyardError

__all__ = ["DynamicBatcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class _Pending(Generic[T, R]):
    __slots__ = ("deadline", "enqueued", "future", "item", "key")

    def __init__(
        self, item: T, key: Hashable, deadline: float | None, future: asyncio.Future[R], now: float
    ) -> None:
        self.item = item
        self.key = key
        self.deadline = deadline
        self.future = future
        self.enqueued = now


class DynamicBatcher(Generic[T, R]):
    """Merge concurrent ``submit`` calls into calls of ``run_batch(list[T]) -> list[R]``.

    Args:
        run_batch: Runs a batch; returns one result per item, in order.
        settings: ``max_batch_size``, ``max_wait_ms``, ``max_queue_size``.
        clock: Monotonic time (tests inject a ManualClock).
        executor: Where ``run_batch`` runs; None runs it on the loop's thread.
        on_batch: Called with (size, oldest wait in s, run time in s) after each batch.
        isolate_failures: Retry a failed batch item by item.

    Example:
        >>> batcher = DynamicBatcher(model_fn, BatchingSettings())   # doctest: +SKIP
        >>> await batcher.start(); y = await batcher.submit(x)      # doctest: +SKIP
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        settings: BatchingSettings | None = None,
        *,
        clock: Clock | None = None,
        executor: Executor | None = None,
        on_batch: Callable[[int, float, float], None] | None = None,
        isolate_failures: bool = True,
    ) -> None:
        self.run_batch = run_batch
        self.settings = settings or BatchingSettings()
        self.clock = clock or MonotonicClock()
        self.executor = executor
        self.on_batch = on_batch
        self.isolate_failures = isolate_failures
        self._queue: deque[_Pending[T, R]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._busy = False
        self._soon = False  # a _run_soon is scheduled
        self.batches_run = 0
        self.items_run = 0

    @property
    def queue_depth(self) -> int:
        """Items waiting to be dispatched."""
        return len(self._queue)

    async def start(self) -> None:
        """Start the dispatcher (call inside the running loop)."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._dispatch_loop())

    def submit_soon(
        self, item: T, *, deadline: float | None = None, key: Hashable = None
    ) -> asyncio.Future[R]:
        """Queue one item and return the future of its result, with no coroutine or task.

        When the runner is idle, what is queued runs at the end of this loop turn (a
        ``call_soon``, which runs after every request parsed in this turn has been queued):
        a lone request runs one loop turn later, the same turn's requests run together.
        With ``max_wait_ms`` or an executor, the dispatcher takes it instead.

        Raises:
            Overloaded, DeadlineExceeded, ModelNotReady: as :meth:`submit`, at once.
        """
        future, _ = self._enqueue(item, deadline, key)
        if not self._busy and not self._soon:
            self._soon = True
            future.get_loop().call_soon(self._run_soon)
        return future

    def _run_soon(self) -> None:
        self._soon = False
        if self._busy or not self._queue:
            return  # a leader or the dispatcher is on it
        if self.executor is not None or self.settings.max_wait_ms > 0 or self._wakeup is None:
            if self._wakeup is not None:
                self._wakeup.set()
            return
        self._busy = True
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    self._run_now(batch)
        finally:
            self._busy = False

    def _run_now(self, batch: list[_Pending[T, R]]) -> None:
        """:meth:`_run` on this thread, for a batcher with no executor (never suspends)."""
        started = self.clock.now()
        waited = started - batch[0].enqueued
        try:
            results = self._checked(batch, self.run_batch([p.item for p in batch]))
        except Exception as exc:
            if self._isolating(batch, exc):
                for p in batch:
                    self._settle_alone(p)
            return
        finally:
            self._count(len(batch), waited, started)
        self._resolve(batch, results)

    def _isolating(self, batch: list[_Pending[T, R]], exc: Exception) -> bool:
        """After a failed batch: True to retry its items alone, else fail them all."""
        if self.isolate_failures and len(batch) > 1:
            return True
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)
        return False

    @staticmethod
    def _resolve(batch: list[_Pending[T, R]], results: list[R]) -> None:
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    def _settle_alone(self, p: _Pending[T, R]) -> None:
        if p.future.done():
            return
        try:
            (result,) = self.run_batch([p.item])
        except Exception as exc:
            self._failed_alone(p, exc)
        else:
            p.future.set_result(result)

    @staticmethod
    def _failed_alone(p: _Pending[T, R], exc: Exception) -> None:
        if not isinstance(exc, ShipyardError):
            logger.debug("Item failed alone", exc_info=exc)
        p.future.set_exception(exc)

    @staticmethod
    def _checked(batch: list[_Pending[T, R]], results: list[R]) -> list[R]:
        if len(results) != len(batch):
            raise InferenceError(
                f"A batch of {len(batch)} must give {len(batch)} results. "
                f"Got {len(results)} instead."
            )
        return results

    def _count(self, size: int, waited: float, started: float) -> None:
        self.batches_run += 1
        self.items_run += size
        if self.on_batch is not None:
            self.on_batch(size, waited, self.clock.now() - started)

    def _enqueue(
        self, item: T, deadline: float | None, key: Hashable
    ) -> tuple[asyncio.Future[R], _Pending[T, R]]:
        if self._task is None or self._closing or self._wakeup is None:
            from shipyard.errors import ModelNotReady

            raise ModelNotReady(
                "The model's batcher must be running to accept requests. It is not."
            )
        if len(self._queue) >= self.settings.max_queue_size:
            raise Overloaded(
                f"The model's queue must have room. It holds {len(self._queue)} requests, "
                f"its limit (SHIPYARD_BATCHING__MAX_QUEUE_SIZE={self.settings.max_queue_size}).",
                hint="Retry after a moment, or add capacity.",
            )
        now = self.clock.now()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded("The request's deadline passed before it could be queued.")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        pending = _Pending(item, key, deadline, future, now)
        self._queue.append(pending)
        return future, pending

    async def submit(self, item: T, *, deadline: float | None = None, key: Hashable = None) -> R:
        """Queue one item and wait for its result.

        Raises:
            Overloaded: the queue is full (raised at once).
            DeadlineExceeded: ``deadline`` (clock time) passed before it ran.
            ModelNotReady: the batcher is closed.
        """
        future, pending = self._enqueue(item, deadline, key)
        if not self._busy:
            # Nobody is running a batch: this caller leads, so a lone request costs one
            # loop turn, not a hand-off to the dispatcher task and back.
            self._busy = True
            try:
                if self.executor is None and self.settings.max_wait_ms <= 0:
                    await asyncio.sleep(0)  # requests parsed in this loop turn may join
                    queue = self._queue
                    if len(queue) == 1 and queue[0] is pending:
                        queue.popleft()
                        return self._run_alone_inline(pending)
                    await self._lead(future, collected=True)
                else:
                    await self._lead(future)
            except asyncio.CancelledError:
                future.cancel()  # our item, if still queued, is dropped
                raise
            finally:
                self._busy = False
                if self._queue and self._wakeup is not None:
                    self._wakeup.set()
        return await future

    def _run_alone_inline(self, p: _Pending[T, R]) -> R:
        """Run a batch of one on this thread: no future to resolve, no task hop."""
        started = self.clock.now()
        if p.deadline is not None and p.deadline <= started:
            raise DeadlineExceeded("The request's deadline passed while it waited in the queue.")
        try:
            results = self.run_batch([p.item])
        finally:
            self._count(1, started - p.enqueued, started)
        return self._checked([p], results)[0]

    def _take(self) -> list[_Pending[T, R]]:
        """The next batch: the oldest live item and later items with its key."""
        queue = self._queue
        now = self.clock.now()
        first: _Pending[T, R] | None = None
        while queue:
            p = queue.popleft()
            if p.future.done():  # cancelled by its caller
                continue
            if p.deadline is not None and p.deadline <= now:
                p.future.set_exception(
                    DeadlineExceeded("The request's deadline passed while it waited in the queue.")
                )
                continue
            first = p
            break
        if first is None:
            return []
        batch = [first]
        limit = self.settings.max_batch_size
        if limit > 1 and queue:
            keep: deque[_Pending[T, R]] = deque()
            while queue and len(batch) < limit:
                p = queue.popleft()
                if p.future.done():
                    continue
                if p.deadline is not None and p.deadline <= now:
                    p.future.set_exception(
                        DeadlineExceeded(
                            "The request's deadline passed while it waited in the queue."
                        )
                    )
                elif p.key == first.key:
                    batch.append(p)
                else:
                    keep.append(p)
            keep.extend(queue)
            queue.clear()
            queue.extend(keep)
        return batch

    def _compatible_waiting(self, key: Hashable) -> int:
        return sum(1 for p in self._queue if p.key == key and not p.future.done())

    async def _collect(self, collected: bool = False) -> None:
        """Let requests parsed in this loop turn join; then wait out max_wait if asked."""
        if not collected:
            await asyncio.sleep(0)
        max_wait_s = self.settings.max_wait_ms / 1000
        if max_wait_s <= 0 or not self._queue or self._wakeup is None:
            return
        oldest = self._queue[0]
        while (
            1 < self._compatible_waiting(oldest.key) < self.settings.max_batch_size
            and self.clock.now() - oldest.enqueued < max_wait_s
            and not self._closing
        ):
            self._wakeup.clear()
            remaining = max_wait_s - (self.clock.now() - oldest.enqueued)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(remaining, 0))

    async def _lead(self, until: asyncio.Future[R] | None, collected: bool = False) -> None:
        """Run batches until ``until`` is resolved (or, for the dispatcher, the queue empties).

        ``collected``: the caller already let this loop turn's requests join.
        """
        while self._queue:
            await self._collect(collected)
            collected = False
            batch = self._take()
            if batch:
                if self.executor is None:
                    await self._run(batch)  # never suspends: cannot be cut off half-way
                else:
                    # a cancelled leader must not strand the others waiting on this batch
                    await asyncio.shield(self._run(batch))
            if until is not None and until.done():
                return

    async def _dispatch_loop(self) -> None:
        """Runs what a leading caller left behind (other keys, overflow past max size)."""
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            if not self._queue or self._busy:
                if self._closing and not self._queue:
                    return
                wakeup.clear()
                await wakeup.wait()
                continue
            self._busy = True
            try:
                await self._lead(None)
            finally:
                self._busy = False

    async def _call(self, items: list[T]) -> list[R]:
        if self.executor is None:
            return self.run_batch(items)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.run_batch, items)

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        started = self.clock.now()
        waited = started - batch[0].enqueued
        items = [p.item for p in batch]
        try:
            results = self._checked(batch, await self._call(items))
        except Exception as exc:
            if self._isolating(batch, exc):
                await self._run_alone(batch)
            return
        finally:
            self._count(len(batch), waited, started)
        self._resolve(batch, results)

    async def _run_alone(self, batch: list[_Pending[T, R]]) -> None:
        for p in batch:
            if p.future.done():
                continue
            try:
                (result,) = await self._call([p.item])
            except Exception as exc:
                self._failed_alone(p, exc)
            else:
                p.future.set_result(result)

    async def aclose(self) -> None:
        """Stop accepting, finish what is queued, stop the dispatcher."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            await task
