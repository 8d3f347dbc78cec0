"""The worker: one loop driving the deadline guard, the sync lane, the submitter and the poller.

Any number of workers can run on one Redis: every piece of work is claimed under a lease. `run(burst=True)`
flushes every queue at once and returns when nothing is left to do (no queued job, no open batch, no sync
call), which makes tests deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from proxy.delivery.webhooks.deliverer import WebhookDeliverer
from proxy.events import WorkerEvents
from proxy.queue_stats import QueueWatch
from proxy.store.store import Store
from proxy.worker.context import WorkerContext, WorkerServices, new_worker_id, pause_from_environment
from proxy.worker.leases import Leases
from proxy.worker.poller import Poller
from proxy.worker.rescuer import Rescuer
from proxy.worker.submitter import Submitter
from proxy.worker.sync_lane import SyncLane

log = logging.getLogger("batchgate.worker")

ERROR_PAUSE = 1.0


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
            clock=clock,
            pause_at=pause_at,
            pause_marker=marker,
        )
        self.submitter = Submitter(self.ctx)
        self.poller = Poller(self.ctx, self.submitter)
        self.rescuer = Rescuer(self.ctx)
        self.sync_lane = SyncLane(self.ctx)
        self.webhooks = WebhookDeliverer(runtime, store, events=self.ctx.events, clock=clock)
        self.queue_watch = QueueWatch(store, runtime.metrics, lambda: runtime.config)

    async def tick(self, *, drain: bool = False) -> bool:
        """One pass over every group; True when something was done."""
        groups = await self.ctx.store.batches.groups()
        await self.queue_watch.refresh(groups)  # the queue gauges, every few seconds
        worked = await self.rescuer.tick(groups)
        worked = await self.sync_lane.tick(groups) or worked
        worked = await self.submitter.tick(groups, drain=drain) or worked
        worked = await self.webhooks.tick(groups) or worked
        return await self.poller.tick(groups) or worked

    async def idle(self) -> bool:
        if self.sync_lane.running:
            return False
        groups = await self.ctx.store.batches.groups()
        if not await self.webhooks.idle(groups):
            return False
        for tag in groups:
            if not await self.ctx.store.batches.is_idle(tag):
                return False
        return True

    async def run(self, *, burst: bool = False, stop: asyncio.Event | None = None) -> None:
        """Tick until `stop` is set; then take no new work and let the calls in flight finish.

        Cancelling the task (the API process at shutdown; `batchgate worker` once its drain time is up) hands
        back what is still in flight: leases are released and sync calls go back to their queue, so another
        worker takes them over at once instead of when the claims would lapse.
        """
        if stop is not None:
            self.ctx.stopping = stop
        stop = self.ctx.stopping
        log.info("worker started", extra={"worker": self.ctx.worker_id, "burst": burst})
        try:
            while not stop.is_set():
                try:
                    worked = await self.tick(drain=burst)
                    if burst and await self.idle():
                        return
                except Exception:
                    log.exception("worker tick failed", extra={"worker": self.ctx.worker_id})
                    worked = False
                    await asyncio.sleep(ERROR_PAUSE)
                if not worked:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self.ctx.worker_config.tick)
            await self.sync_lane.drain()  # graceful stop: let in-flight calls finish
        finally:
            await asyncio.shield(self.sync_lane.hand_back())
            await self.webhooks.aclose()
            log.info("worker stopped", extra={"worker": self.ctx.worker_id})
