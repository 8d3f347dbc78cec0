"""The deadline guard: a job that its batch will not answer in time goes to the synchronous lane.

For each group it reads the jobs whose deadline falls within reach (the deadlines ZSET), estimates when their
batch will end (the batch's age against the model's turnaround estimate, its progress once it is overdue) and
moves every job at risk to the sync queue. A batch with nothing left worth waiting for is cancelled upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from proxy.providers.openai_batch import BatchApiError
from proxy.runtime import Runtime
from proxy.store import keys
from proxy.store.records import SYNC_OWNER, BatchRecord, decoded
from proxy.store.store import Store
from proxy.worker.context import WorkerContext
from proxy.worker.timing import at_risk, flush_slack, remaining_estimate

log = logging.getLogger("batchgate.worker.rescuer")

WINDOW = 500


# (tag, group, batch id): have cancel_if_pointless run in a task of its own, off the guard's path
CancelLater = Callable[[str, str, str], object]


class Rescuer:
    def __init__(self, ctx: WorkerContext, *, cancel_later: CancelLater) -> None:
        self.ctx = ctx
        self.cancel_later = cancel_later

    async def guard(self, tag: str, group: str) -> bool:
        """One pass of the guard over a group; True when a job left a batch for the sync lane."""
        ctx = self.ctx
        client = ctx.store.client
        now = ctx.clock()
        turnaround = ctx.knobs(group).turnaround_estimate
        margin = ctx.worker_config.safety_margin
        horizon = now + margin + turnaround + flush_slack(turnaround)
        found = await client.zrangebyscore(
            keys.deadlines(tag), "-inf", repr(horizon), start=0, num=WINDOW, withscores=True
        )
        rows = [(decoded(entry[0]), float(entry[1])) for entry in found if isinstance(entry, tuple | list)]
        if not rows:
            return False
        pipe = client.pipeline(transaction=False)
        for member, _ in rows:
            pipe.hmget(keys.job(member), "owner", "status")
        states = await pipe.execute()
        batches: dict[str, BatchRecord | None] = {}
        emptied: set[str] = set()
        for (member, deadline), (owner_raw, status_raw) in zip(rows, states, strict=True):
            job_id, owner = member, decoded(owner_raw or b"")
            if status_raw is None or owner == SYNC_OWNER or decoded(status_raw) in ("completed", "failed", "cancelled"):
                continue
            if owner:
                if owner not in batches:
                    batches[owner] = await ctx.store.batches.get(tag, owner)
                remaining = self._batch_remaining(batches[owner], now, turnaround)
                why = "its batch is not expected to end before the deadline less the safety margin"
            else:
                remaining = turnaround
                why = "still queued: a batch started now would end after the deadline less the safety margin"
            if not at_risk(now, deadline=deadline, remaining=remaining, margin=margin):
                continue
            if await ctx.store.outcomes.to_sync(job_id, expected_owner=owner, reason=why):
                log.info(
                    "deadline guard: job sent synchronously",
                    extra={"job": job_id, "group": group, "batch": owner or None, "reason": why,
                           "seconds_left": round(deadline - now, 3)},
                )  # fmt: skip
                ctx.events.rescue(job_id=job_id, group=group, reason=why)
                if owner:
                    emptied.add(owner)
        for batch_id in emptied:
            self.cancel_later(tag, group, batch_id)
        return bool(emptied)

    @staticmethod
    def _batch_remaining(record: BatchRecord | None, now: float, turnaround: float) -> float:
        if record is None or record.state != "submitted":
            return turnaround  # not yet running upstream
        started = record.submitted_at or record.created_at
        return remaining_estimate(now, started_at=started, turnaround=turnaround, progress=record.progress)


async def cancel_if_pointless(runtime: Runtime, store: Store, tag: str, batch_id: str) -> bool:
    """Cancel a submitted batch once no job in it still wants its answer (its finished lines are kept)."""
    if await store.batches.remaining(tag, batch_id):
        return False
    record = await store.batches.get(tag, batch_id)
    if record is None or record.state != "submitted" or record.cancel_requested or not record.provider_batch_id:
        return False
    try:
        await runtime.batch_client(record.group).cancel_batch(record.provider_batch_id)
    except (BatchApiError, httpx.HTTPError) as exc:
        log.warning("cancelling a pointless batch failed: %r", exc, extra={"batch": batch_id})
        return False
    await store.batches.update(tag, batch_id, cancel_requested="1")
    await store.batches.schedule(tag, batch_id, at=store.clock() + runtime.config.worker.poll_interval_min)
    log.info("batch cancelled: no job in it still waits for it", extra={"batch": batch_id, "group": record.group})
    return True
