"""Stalled batches: a running batch with no finished line past what its learned turnaround allows.

Such a batch (older than the `stall_quantile` of its learned turnaround, not one line finished) is cancelled
upstream at once, and each job it still owes goes to the cheapest lane that keeps its deadline at the configured
confidence: a new batch, else flex (when the model has it), else the sync lane. The cancelled batch is polled on
as usual: whatever lines it finished are ingested and booked (the cancel path), not wasted. Until a group's
turnaround is learned no batch is declared stalled (the deadline guard alone watches it).
"""

from __future__ import annotations

import logging

from proxy.jobs.service import cancel_batch
from proxy.jobs.timing import batch_lane_fits
from proxy.jobs.turnaround_book import for_batch
from proxy.providers.base import BatchInfo
from proxy.reasons import RescueReason
from proxy.store.records import BatchRecord
from proxy.worker.context import WorkerContext

log = logging.getLogger("batchgate.worker.stalls")

STALL_CANCEL = "batch cancelled: stalled (no finished line past what its learned turnaround allows)"


def is_stalled(*, elapsed: float, done: int | None, stall_after: float | None) -> bool:
    """No line finished (`done` 0, or unknown) after `stall_after` seconds (None: the distribution is not learned)."""
    return stall_after is not None and elapsed > stall_after and not done


async def handle_stall(ctx: WorkerContext, record: BatchRecord, info: BatchInfo) -> bool:
    """Cancel a stalled batch (its next poll `poll_interval_min` later) and move the jobs it owes on; False (nothing
    done) when the batch is not stalled, not running upstream, or the provider refused the cancel (logged)."""
    if record.cancel_requested or not record.provider_batch_id:
        return False
    dist = for_batch(await ctx.turnarounds.fresh(record.group), record.jobs)
    stall_after = dist.quantile(ctx.worker_config.stall_quantile) if dist.learned else None
    now = ctx.clock()
    elapsed = now - (record.submitted_at or record.created_at)
    done = info.done if info.total else None
    if not is_stalled(elapsed=elapsed, done=done, stall_after=stall_after):
        return False
    recheck_in = ctx.worker_config.poll_interval_min  # its cancel is looked at soon, its finished lines ingested
    if not await cancel_batch(ctx.store, ctx.runtime.batch_client, record, recheck_in=recheck_in, why=STALL_CANCEL):
        return False
    moved = await _move_jobs(ctx, record)
    log.warning(
        "batch stalled: cancelled, its jobs moved on",
        extra={"batch": record.id, "group": record.group, "elapsed": round(elapsed, 3),
               "stall_after": round(stall_after or 0.0, 3), **moved},
    )  # fmt: skip
    ctx.runtime.metrics.record_batch_stalled(queue=record.group)
    return True


async def _move_jobs(ctx: WorkerContext, record: BatchRecord) -> dict[str, int]:
    """Each job the batch owes to a new batch, flex or sync (the first that keeps its deadline)."""
    now = ctx.clock()
    margin = ctx.worker_config.safety_margin
    turnaround = ctx.turnaround(record.group)
    flex = ctx.supports_flex(record.group)
    moved = {"rebatched": 0, "flex": 0, "sync": 0}
    ids = await ctx.store.batches.job_ids(record.tag, record.id)
    for job_id, job in zip(ids, await ctx.store.jobs.get_many(ids), strict=True):
        if job is None or job.is_final or job.owner != record.id:
            continue
        if batch_lane_fits(now, deadline=job.deadline, turnaround=turnaround, margin=margin):
            # due at once: the next flush takes it into a new batch
            if await ctx.store.outcomes.requeue(job_id, owner=record.id, score=now, count_attempt=False):
                moved["rebatched"] += 1
            continue
        lane = "flex" if flex and batch_lane_fits(
            now, deadline=job.deadline, turnaround=ctx.worker_config.flex_turnaround, margin=margin
        ) else "sync"  # fmt: skip
        if await ctx.store.outcomes.to_sync(
            job_id, expected_owner=record.id, lane=lane, reason=RescueReason.BATCH_STALLED
        ):
            moved[lane] += 1
            ctx.events.rescue(job_id=job_id, group=record.group, reason=RescueReason.BATCH_STALLED)
    return moved
