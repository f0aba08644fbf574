"""The replica's batcher: a lone request runs at once; requests that arrive during a forward share the next one."""

from __future__ import annotations

import asyncio

import pytest

from serving.batcher import DrainingBatcher


def test_requests_arriving_during_a_call_form_the_next_batch() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def handle(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()  # the first call is "the forward" the others arrive during
        return [i * 10 for i in items]

    async def scenario() -> list[int]:
        batcher: DrainingBatcher[int, int] = DrainingBatcher(handle, max_size=4)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        assert batches == [[0]]  # a lone request did not wait for company
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40, 50, 60]
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]  # full batches while busy, never over max_size


def test_sizes_count_rows_and_a_failed_call_fails_only_its_own_callers() -> None:
    async def handle(items: list[int]) -> list[int]:
        if 99 in items:
            raise RuntimeError("forward failed")
        return items

    async def scenario() -> None:
        # An item's size is its rows (a tta image counts twice): 8 rows never fit in a batch of 4.
        batcher: DrainingBatcher[int, int] = DrainingBatcher(handle, max_size=4, size_of=lambda i: 8 if i == 8 else 1)
        with pytest.raises(ValueError, match="does not fit"):
            await batcher.submit(8)
        with pytest.raises(RuntimeError, match="forward failed"):
            await batcher.submit(99)
        assert await batcher.submit(7) == 7  # the consumer outlived the failure

    asyncio.run(scenario())
