"""The worker's scheduler: keyed items, the concurrency bound, failing alone with backoff, lost leases; and the
leases themselves against a real Redis: a lost lease stops the task holding it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest
import redis.asyncio

from proxy.store.leases import LeaseStore
from proxy.store.scripts import Scripts
from proxy.worker.leases import Leases
from proxy.worker.scheduler import RETRY_CAP, Scheduler, backoff
from tests.support.waiting import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorded:
    def __init__(self, clock: Clock | None = None, *, limit: int = 4) -> None:
        self.failed: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.worked = 0
        self.clock = clock or Clock()
        self.scheduler = Scheduler(
            limit=limit, on_failure=self._fail, on_lost=self._lose, on_worked=self._work, clock=self.clock
        )

    def _fail(self, stage: str) -> None:
        self.failed[stage] += 1

    def _lose(self, stage: str) -> None:
        self.lost[stage] += 1

    def _work(self) -> None:
        self.worked += 1


async def settle(scheduler: Scheduler) -> None:
    await asyncio.wait_for(scheduler.drain(), 5)


async def test_one_key_runs_once_at_a_time_and_other_keys_alongside() -> None:
    recorded = Recorded()
    scheduler = recorded.scheduler
    gate = asyncio.Event()
    runs: list[str] = []

    def item(name: str):  # type: ignore[no-untyped-def]
        async def work() -> bool:
            runs.append(name)
            await gate.wait()
            return True

        return work

    assert scheduler.start(("flush", "a"), item("a1"), stage="flush", ids={})
    assert not scheduler.start(("flush", "a"), item("a2"), stage="flush", ids={})
    assert scheduler.start(("flush", "b"), item("b1"), stage="flush", ids={})
    await wait_until(lambda: len(runs) == 2)
    assert sorted(runs) == ["a1", "b1"]
    gate.set()
    await settle(scheduler)
    assert recorded.worked == 2
    assert scheduler.start(("flush", "a"), item("a3"), stage="flush", ids={})  # free again once finished
    await settle(scheduler)
    assert runs[-1] == "a3"


async def test_the_bound_holds_bounded_items_only() -> None:
    recorded = Recorded(limit=2)
    scheduler = recorded.scheduler
    gate = asyncio.Event()

    async def work() -> bool:
        await gate.wait()
        return False

    assert scheduler.start(("batch", "t", "1"), work, stage="batch", ids={})
    assert scheduler.start(("batch", "t", "2"), work, stage="batch", ids={})
    assert scheduler.free() == 0
    assert not scheduler.start(("batch", "t", "3"), work, stage="batch", ids={})
    assert scheduler.start(("cancel", "t", "1"), work, stage="cancel", ids={}, bounded=False)
    assert scheduler.running_under("batch", "t") == 2
    gate.set()
    await settle(scheduler)
    assert scheduler.free() == 2
    assert recorded.worked == 0


async def test_a_failing_item_fails_alone_and_backs_off_exponentially(caplog: pytest.LogCaptureFixture) -> None:
    recorded = Recorded()
    scheduler, clock = recorded.scheduler, recorded.clock
    healthy_runs = 0

    async def broken() -> bool:
        raise ValueError("a body the encoder refuses")

    async def healthy() -> bool:
        nonlocal healthy_runs
        healthy_runs += 1
        return True

    waits = []
    for attempt in range(1, 9):
        assert scheduler.start(("flush", "bad"), broken, stage="flush", ids={"queue": "bad-model"})
        assert scheduler.start(("flush", "good"), healthy, stage="flush", ids={"queue": "good-model"})
        await settle(scheduler)
        assert recorded.failed["flush"] == attempt
        assert not scheduler.ready(("flush", "bad"))
        wait = 0.0
        while not scheduler.ready(("flush", "bad")):
            clock.now += 0.25
            wait += 0.25
        waits.append(wait)
    assert waits == [backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, RETRY_CAP, RETRY_CAP]
    assert healthy_runs == 8
    assert "a body the encoder refuses" in caplog.text
    assert "bad-model" in str([record.__dict__.get("queue") for record in caplog.records])

    async def fixed() -> bool:
        return True

    assert scheduler.start(("flush", "bad"), fixed, stage="flush", ids={})
    await settle(scheduler)
    assert scheduler.ready(("flush", "bad"))  # a success clears the backoff at once


async def test_an_inline_step_that_raises_is_counted_and_backs_off() -> None:
    recorded = Recorded()
    scheduler = recorded.scheduler

    async def step() -> int:
        raise ConnectionError("redis went away")

    assert await scheduler.attempt(("claim", "sync", "t"), step, stage="sync", ids={}) is None
    assert recorded.failed["sync"] == 1
    assert await scheduler.attempt(("claim", "sync", "t"), step, stage="sync", ids={}) is None
    assert recorded.failed["sync"] == 1  # backing off: not even tried


async def test_an_item_cancelled_from_outside_is_a_lost_lease_and_cancel_all_stops_the_rest() -> None:
    recorded = Recorded()
    scheduler = recorded.scheduler
    started = asyncio.Event()

    async def long() -> bool:
        started.set()
        await asyncio.Event().wait()
        return True

    scheduler.start(("batch", "t", "1"), long, stage="batch", ids={})
    await started.wait()
    scheduler.running[("batch", "t", "1")].cancel()  # what a lease keeper does to its holder
    await settle(scheduler)
    assert recorded.lost["batch"] == 1
    assert recorded.failed["batch"] == 0

    started.clear()
    scheduler.start(("batch", "t", "2"), long, stage="batch", ids={})
    task = scheduler.running[("batch", "t", "2")]
    await started.wait()
    await scheduler.cancel_all()
    assert task.cancelled()
    assert recorded.lost["batch"] == 1  # a hand-back is not a lost lease
    assert not scheduler.start(("batch", "t", "3"), long, stage="batch", ids={})


async def test_a_lease_whose_key_is_lost_cancels_the_task_holding_it(redis_client: redis.asyncio.Redis) -> None:
    leases = Leases(LeaseStore(redis_client, Scripts.register(redis_client)), owner="w1", ttl=0.3)
    holding = asyncio.Event()
    reached_the_call = False

    async def holder() -> None:
        nonlocal reached_the_call
        async with leases.held("lease:test") as mine:
            assert mine
            holding.set()
            await asyncio.sleep(30)  # a long pause; the keeper renews every 0.1 s meanwhile
            reached_the_call = True

    task = asyncio.create_task(holder())
    await holding.wait()
    assert (await redis_client.get("lease:test") or b"").startswith(b"w1/")
    await redis_client.set("lease:test", "w2/1")  # the lease lapsed and another worker took it
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()
    assert not reached_the_call
    assert await redis_client.get("lease:test") == b"w2/1"  # not released: it is not ours


async def test_confirm_stops_a_holder_whose_lease_another_task_of_the_same_worker_took(
    redis_client: redis.asyncio.Redis,
) -> None:
    leases = Leases(LeaseStore(redis_client, Scripts.register(redis_client)), owner="w1", ttl=30)
    first_paused, first_resumes, second_holds, first_done = (asyncio.Event() for _ in range(4))
    calls: list[str] = []

    async def first() -> None:
        try:
            async with leases.held("lease:batch") as mine:
                assert mine
                first_paused.set()
                await first_resumes.wait()
                await leases.confirm()  # before the provider call
                calls.append("first")
        finally:
            first_done.set()

    async def second() -> None:
        async with leases.held("lease:batch") as mine:
            assert mine
            second_holds.set()
            await first_done.wait()
            await leases.confirm()
            calls.append("second")

    one = asyncio.create_task(first())
    await first_paused.wait()
    await redis_client.delete("lease:batch")  # the first holder's lease lapsed during its pause
    two = asyncio.create_task(second())  # the same worker takes it again, in another task
    await second_holds.wait()
    first_resumes.set()
    await asyncio.wait_for(asyncio.wait({one, two}), 5)
    assert one.cancelled()
    assert calls == ["second"]
    assert await redis_client.get("lease:batch") is None  # released by its holder


async def test_a_holder_cancelled_as_its_block_ends_stays_cancelled_and_releases_its_lease(
    redis_client: redis.asyncio.Redis,
) -> None:
    # the cancellation lands while the lease's finally stops the keeper (a worker stopping just as a step ends)
    leases = Leases(LeaseStore(redis_client, Scripts.register(redis_client)), owner="w1", ttl=30)
    carried_on = False

    async def holder() -> None:
        nonlocal carried_on
        async with leases.held("lease:batch") as mine:
            assert mine
            current = asyncio.current_task()
            assert current is not None
            asyncio.get_running_loop().call_soon(current.cancel)  # runs once the block's exit first yields
        carried_on = True
        await asyncio.sleep(30)

    task = asyncio.create_task(holder())
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    assert not carried_on, "the holder's own cancellation was swallowed: it carried on after its lease"
    assert await redis_client.get("lease:batch") is None  # released all the same
