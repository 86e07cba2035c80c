"""DynamicBatcher through its public API, with a ManualClock and real asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from shipyard._utils.clock import ManualClock
from shipyard.batching import DynamicBatcher, shape_key, split, stack
from shipyard.config import BatchingSettings
from shipyard.errors import DeadlineExceeded, InferenceError, ModelNotReady, Overloaded


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro_fn())


class Recorder:
    """A runner that records every batch it was given."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on or set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if any(i in self.fail_on for i in items):
            raise InferenceError("poisoned")
        return [i * 10 for i in items]


def test_lone_request_runs_at_once_without_waiting() -> None:
    async def main() -> None:
        rec = Recorder()
        clock = ManualClock()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=8, max_wait_ms=1000), clock=clock)
        await b.start()
        assert await asyncio.wait_for(b.submit(3), timeout=5) == 30  # no clock advance needed
        await b.aclose()
        assert rec.batches == [[3]]

    run(main)


def test_concurrent_requests_are_merged_up_to_max_batch_size() -> None:
    async def main() -> None:
        rec = Recorder()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=4, max_wait_ms=0))
        await b.start()
        results = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.aclose()
        assert results == [i * 10 for i in range(10)]
        assert max(len(batch) for batch in rec.batches) == 4
        assert sorted(i for batch in rec.batches for i in batch) == list(range(10))

    run(main)


def test_only_items_with_the_same_key_share_a_batch() -> None:
    async def main() -> None:
        rec = Recorder()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=16, max_wait_ms=0))
        await b.start()
        await asyncio.gather(*(b.submit(i, key=i % 2) for i in range(8)))
        await b.aclose()
        for batch in rec.batches:
            assert len({i % 2 for i in batch}) == 1

    run(main)


def test_full_queue_is_refused_at_once() -> None:
    async def main() -> None:
        def slow(items: list[int]) -> list[int]:
            return items

        b = DynamicBatcher(
            slow, BatchingSettings(max_batch_size=1, max_queue_size=2, max_wait_ms=0)
        )
        await b.start()
        t1 = asyncio.ensure_future(b.submit(1))
        t2 = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)  # both queued, dispatcher not yet run
        with pytest.raises(Overloaded) as info:
            await b.submit(3)
        assert "MAX_QUEUE_SIZE" in info.value.message
        assert await t1 == 1
        assert await t2 == 2
        await b.aclose()

    run(main)


def test_deadline_passed_before_dispatch_is_never_executed() -> None:
    async def main() -> None:
        rec = Recorder()
        clock = ManualClock(100.0)
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=8, max_wait_ms=0), clock=clock)
        await b.start()
        with pytest.raises(DeadlineExceeded):
            await b.submit(1, deadline=99.0)
        task = asyncio.ensure_future(b.submit(2, deadline=100.5))
        await asyncio.sleep(0)  # queued
        clock.advance(1.0)  # deadline passes while it waits
        with pytest.raises(DeadlineExceeded):
            await task
        assert await b.submit(3, deadline=200.0) == 30
        await b.aclose()
        assert all(1 not in batch and 2 not in batch for batch in rec.batches)

    run(main)


def test_a_poisoned_item_fails_alone() -> None:
    async def main() -> None:
        rec = Recorder(fail_on={5})
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=16, max_wait_ms=0))
        await b.start()
        results = await asyncio.gather(*(b.submit(i) for i in range(10)), return_exceptions=True)
        await b.aclose()
        for i, r in enumerate(results):
            if i == 5:
                assert isinstance(r, InferenceError)
            else:
                assert r == i * 10

    run(main)


def test_cancelled_waiter_is_dropped() -> None:
    async def main() -> None:
        rec = Recorder()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=8, max_wait_ms=0))
        await b.start()
        task = asyncio.ensure_future(b.submit(7))
        await asyncio.sleep(0)
        task.cancel()
        assert await b.submit(8) == 80
        await b.aclose()
        assert all(7 not in batch for batch in rec.batches)

    run(main)


def test_max_wait_holds_a_partial_batch_until_it_fills_or_times_out() -> None:
    async def main() -> None:
        rec = Recorder()
        clock = ManualClock()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=3, max_wait_ms=50), clock=clock)
        await b.start()
        t = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert rec.batches == []  # two waiting for a third, within max_wait
        t.append(asyncio.ensure_future(b.submit(2)))
        assert await asyncio.gather(*t) == [0, 10, 20]
        assert rec.batches == [[0, 1, 2]]
        await b.aclose()

    run(main)


def test_submit_after_close_is_not_ready_and_close_drains() -> None:
    async def main() -> None:
        rec = Recorder()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=2, max_wait_ms=0))
        await b.start()
        pending = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await b.aclose()
        assert [p.result() for p in pending] == [0, 10, 20, 30, 40]
        with pytest.raises(ModelNotReady):
            await b.submit(1)

    run(main)


def test_thousand_concurrent_distinct_inputs_never_mix() -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)

    def model(items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        merged, offsets = stack(items)
        return split({"y": merged["x"] @ w}, offsets)

    async def main() -> None:
        b = DynamicBatcher(
            model, BatchingSettings(max_batch_size=32, max_wait_ms=0, max_queue_size=2000)
        )
        await b.start()
        rng = np.random.default_rng(0)
        inputs = [
            {"x": rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32)}
            for _ in range(1000)
        ]
        results = await asyncio.gather(*(b.submit(x, key=shape_key(x)) for x in inputs))
        await b.aclose()
        for x, r in zip(inputs, results, strict=True):
            np.testing.assert_allclose(r["y"], x["x"] @ w, rtol=1e-5, atol=1e-5)
        assert b.batches_run < 1000  # batching happened

    run(main)


def test_on_batch_hook_reports_sizes() -> None:
    async def main() -> None:
        sizes: list[int] = []
        b = DynamicBatcher(
            Recorder(),
            BatchingSettings(max_batch_size=8, max_wait_ms=0),
            on_batch=lambda n, wait, ran: sizes.append(n),
        )
        await b.start()
        await asyncio.gather(*(b.submit(i) for i in range(8)))
        await b.aclose()
        assert sum(sizes) == 8

    run(main)


# ---- submit_soon: no coroutine per request ---------------------------------------------


def test_submit_soon_runs_one_turns_requests_as_one_batch_at_the_end_of_the_turn() -> None:
    async def main() -> None:
        rec = Recorder()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=4, max_wait_ms=0))
        await b.start()
        await asyncio.sleep(0)  # the dispatcher settles into its wait
        futures = [b.submit_soon(i, key=i % 2) for i in range(10)]
        assert rec.batches == []  # nothing runs before the turn ends
        assert not any(f.done() for f in futures)
        await asyncio.sleep(0)
        assert all(f.done() for f in futures)
        assert [f.result() for f in futures] == [i * 10 for i in range(10)]
        # one key per batch, at most max_batch_size, in arrival order
        assert rec.batches == [[0, 2, 4, 6], [1, 3, 5, 7], [8], [9]]
        lone = b.submit_soon(42)
        assert await lone == 420
        assert rec.batches[-1] == [42]
        await b.aclose()

    run(main)


def test_submit_soon_fails_a_poisoned_item_alone_and_refuses_at_once() -> None:
    async def main() -> None:
        rec = Recorder(fail_on={3})
        clock = ManualClock()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=8, max_queue_size=4), clock=clock)
        await b.start()
        await asyncio.sleep(0)  # the dispatcher settles into its wait
        with pytest.raises(DeadlineExceeded):
            b.submit_soon(98, deadline=clock.now())
        futures = [b.submit_soon(i) for i in range(4)]
        with pytest.raises(Overloaded):
            b.submit_soon(99)  # the queue holds 4
        await asyncio.sleep(0)
        assert [f.result() for f in futures[:3]] == [0, 10, 20]
        with pytest.raises(InferenceError):
            futures[3].result()
        assert rec.batches[0] == [0, 1, 2, 3]  # tried together, then one by one
        await b.aclose()
        with pytest.raises(ModelNotReady):
            b.submit_soon(1)

    run(main)


def test_submit_soon_with_max_wait_is_run_by_the_dispatcher() -> None:
    async def main() -> None:
        rec = Recorder()
        b = DynamicBatcher(rec, BatchingSettings(max_batch_size=4, max_wait_ms=5))
        await b.start()
        await asyncio.sleep(0)  # the dispatcher settles into its wait
        futures = [b.submit_soon(i) for i in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*futures), timeout=5)
        assert results == [0, 10, 20]
        assert sorted(i for batch in rec.batches for i in batch) == [0, 1, 2]
        await b.aclose()

    run(main)


def test_submit_soon_and_submit_share_batches_and_never_mix_results() -> None:
    async def main() -> None:
        rec = Recorder()
        b = DynamicBatcher(
            rec, BatchingSettings(max_batch_size=64, max_wait_ms=0, max_queue_size=1000)
        )
        await b.start()
        await asyncio.sleep(0)  # the dispatcher settles into its wait
        soon = [b.submit_soon(i) for i in range(0, 500, 2)]
        awaited = [asyncio.ensure_future(b.submit(i)) for i in range(1, 500, 2)]
        got = await asyncio.gather(*soon, *awaited)
        assert got == [i * 10 for i in range(0, 500, 2)] + [i * 10 for i in range(1, 500, 2)]
        assert sorted(i for batch in rec.batches for i in batch) == list(range(500))
        await b.aclose()

    run(main)
