"""The worker: a loop that claims due work and starts each item as its own task, and the deadline guard's loop.

Every `worker.tick` (sooner when a task has just done something) the scheduling loop goes over the groups: it
starts the sync calls and webhook deliveries that are due, a flush of each queue that is due, and a look at each
open batch that is due (poll, ingest, or carry on a submission a dead worker left). Flushes and batch looks run
under the scheduler (`scheduler.py`: keyed, at most `worker.concurrency` at once, each failing alone with
backoff); sync calls and deliveries under their own bounds. The deadline guard runs on a loop of its own that
makes no provider call, so no upload, poll or ingest can delay a rescue.

Any number of workers can run on one Redis: every piece of work is claimed under a lease. `run(burst=True)`
flushes every queue at once and returns when nothing is left to do (no queued job, no open batch, no sync call,
no task running), which makes tests deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial

from proxy.delivery.webhooks.deliverer import WebhookDeliverer
from proxy.events import WorkerEvents
from proxy.jobs.service import cancel_if_pointless
from proxy.jobs.turnaround_book import TurnaroundBook
from proxy.queue_stats import QueueWatch
from proxy.store.store import Store
from proxy.worker.context import WorkerContext, WorkerServices, new_worker_id, pause_from_environment
from proxy.worker.leases import Leases
from proxy.worker.poller import Poller
from proxy.worker.rescuer import Rescuer
from proxy.worker.scheduler import Scheduler
from proxy.worker.submitter import Submitter
from proxy.worker.sync_lane import SyncLane

log = logging.getLogger("batchgate.worker")

ERROR_PAUSE = 1.0
GUARD_STOP_WAIT = 5.0  # at shutdown, how long the guard may take to finish its pass before it is cancelled


def raise_if_cancelled() -> None:
    """Python 3.11's wait_for (redis-py sends every command through one) can swallow a cancellation that lands as
    its inner call completes; the task still counts the request, so a loop checks it on every turn."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Worker:
    def __init__(
        self,
        runtime: WorkerServices,
        *,
        store: Store | None = None,
        events: WorkerEvents | None = None,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        store = store or runtime.store
        owner = worker_id or new_worker_id()
        pause_at, marker = pause_from_environment()
        self.ctx = WorkerContext(
            runtime=runtime,
            store=store,
            leases=Leases(store.leases, owner=owner, ttl=runtime.config.worker.lease),
            events=events or runtime.events,
            worker_id=owner,
            turnarounds=TurnaroundBook(store, lambda: runtime.config),
            clock=clock,
            pause_at=pause_at,
            pause_marker=marker,
        )
        self._wake = asyncio.Event()  # a task did something: look for work again without waiting a tick
        self.scheduler = Scheduler(
            limit=runtime.config.worker.concurrency,
            on_failure=runtime.metrics.record_task_failure,
            on_lost=runtime.metrics.record_lease_lost,
            on_worked=self._wake.set,
        )
        self.submitter = Submitter(self.ctx)
        self.poller = Poller(self.ctx, self.submitter)
        self.rescuer = Rescuer(self.ctx, cancel_later=self._cancel_later)
        self.sync_lane = SyncLane(self.ctx)
        self.webhooks = WebhookDeliverer(runtime, store, events=self.ctx.events, clock=clock)
        self.queue_watch = QueueWatch(store, runtime.metrics, lambda: runtime.config)
        self._turn = 0

    async def tick(self, *, drain: bool = False) -> bool:
        """One pass of the scheduling loop: start what is due in every group (`drain`: flush every non-empty
        queue). True when sync calls or deliveries were started (there may be more: look again at once)."""
        groups = await self.ctx.store.batches.groups()
        scheduler = self.scheduler
        await scheduler.attempt(("gauges",), partial(self.queue_watch.refresh, groups), stage="scan", ids={})
        order = list(groups.items())
        if order:  # a different group goes first each pass, so none waits behind the others for a free slot
            self._turn = (self._turn + 1) % len(order)
            order = order[self._turn :] + order[: self._turn]
        claimed = False
        for tag, group in order:
            if self.ctx.stopping.is_set():
                break
            ids = {"queue": group}
            for stage, step in (
                ("sync", partial(self.sync_lane.claim, tag, group)),
                ("webhook", partial(self.webhooks.claim, tag)),
            ):
                claimed = bool(await scheduler.attempt(("claim", stage, tag), step, stage=stage, ids=ids)) or claimed
            flush = partial(self._flush_if_due, tag, group, drain)
            await scheduler.attempt(("claim", "flush", tag), flush, stage="flush", ids=ids)
            await scheduler.attempt(
                ("claim", "batch", tag), partial(self._look_at_due, tag, group), stage="batch", ids=ids
            )
        return claimed

    async def _flush_if_due(self, tag: str, group: str, drain: bool) -> bool:
        key = ("flush", tag)
        if not self.scheduler.ready(key) or self.scheduler.free() <= 0:
            return False
        if drain and self.scheduler.running_under("batch", tag):
            return False  # burst: let the batch being ingested requeue its retries first, so they go out together
        if not await self.submitter.due(tag, group, drain=drain):
            return False
        flush = partial(self.submitter.flush, tag, group, drain=drain)
        return self.scheduler.start(key, flush, stage="flush", ids={"queue": group})

    async def _look_at_due(self, tag: str, group: str) -> bool:
        free = self.scheduler.free()
        if free <= 0:
            return False
        # the due list includes the batches this worker is already looking at: ask for that many more
        due = await self.ctx.store.batches.due(tag, limit=free + self.scheduler.running_under("batch", tag))
        started = False
        for batch_id in due:
            look = partial(self.poller.visit, tag, batch_id)
            ids = {"queue": group, "batch": batch_id}
            started = self.scheduler.start(("batch", tag, batch_id), look, stage="batch", ids=ids) or started
        return started

    def _cancel_later(self, tag: str, group: str, batch_id: str) -> None:
        """The guard emptied a batch: cancel it upstream in a task of its own (not bounded: a short call)."""
        cancel = partial(
            cancel_if_pointless,
            self.ctx.store,
            self.ctx.runtime.batch_client,
            tag,
            batch_id,
            recheck_in=self.ctx.worker_config.poll_interval_min,
        )
        ids = {"queue": group, "batch": batch_id}
        self.scheduler.start(("cancel", tag, batch_id), cancel, stage="cancel", ids=ids, bounded=False)

    async def guard(self) -> bool:
        """One pass of the deadline guard over every group; True when it moved work to the sync lane."""
        groups = await self.scheduler.attempt(("guard",), self.ctx.store.batches.groups, stage="guard", ids={})
        rescued = False
        for tag, group in (groups or {}).items():
            step = partial(self.rescuer.guard, tag, group)
            moved = await self.scheduler.attempt(("guard", tag), step, stage="guard", ids={"queue": group})
            rescued = bool(moved) or rescued
        return rescued

    async def _guard_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await self.guard():
                self._wake.set()  # the sync lane has jobs to claim now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.ctx.worker_config.tick)

    async def idle(self) -> bool:
        if self.scheduler.running or self.sync_lane.running:
            return False
        groups = await self.ctx.store.batches.groups()
        if not await self.webhooks.idle(groups):
            return False
        for tag in groups:
            if not await self.ctx.store.batches.is_idle(tag):
                return False
        return True

    async def run(self, *, burst: bool = False, stop: asyncio.Event | None = None) -> None:
        """Schedule until `stop` is set; then take no new work and let the work in flight finish.

        Cancelling the task (the API process at shutdown; `batchgate worker` once its drain time is up) hands
        back what is still in flight: leases are released, batches being submitted are made due again and sync
        calls go back to their queue, so another worker takes them over at once instead of when the claims
        would lapse.
        """
        if stop is not None:
            self.ctx.stopping = stop
        stop = self.ctx.stopping
        log.info("worker started", extra={"worker": self.ctx.worker_id, "burst": burst})
        guard_stop = asyncio.Event()
        guard = asyncio.create_task(self._guard_loop(guard_stop), name="deadline-guard")
        try:
            while not stop.is_set():
                raise_if_cancelled()
                self._wake.clear()
                try:
                    claimed = await self.tick(drain=burst)
                    if burst and await self.idle():
                        return
                except Exception:
                    log.exception("worker loop failed", extra={"worker": self.ctx.worker_id})
                    self.ctx.runtime.metrics.record_task_failure("scan")
                    claimed = False
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=ERROR_PAUSE)
                if not claimed:
                    await self._pause(stop)
            await self.scheduler.drain()  # graceful stop: let the work in flight finish
            await self.sync_lane.drain()
        finally:
            guard_stop.set()
            await asyncio.shield(self._hand_back(guard))
            log.info("worker stopped", extra={"worker": self.ctx.worker_id})

    async def _pause(self, stop: asyncio.Event) -> None:
        """Until the next tick, `stop`, or a task that has done something."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.ctx.worker_config.tick, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _hand_back(self, guard: asyncio.Task[None]) -> None:
        await asyncio.wait({guard}, timeout=GUARD_STOP_WAIT)
        guard.cancel()
        await asyncio.wait({guard})
        await self.scheduler.cancel_all()
        await self.sync_lane.hand_back()
        await self.webhooks.aclose()
