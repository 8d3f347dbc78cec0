"""The deadline guard: a job that its batch will not answer in time goes to the synchronous lane.

For each group it reads the jobs whose deadline falls within reach (the deadlines ZSET), estimates when their
batch will end at the configured confidence (the learned turnaround given the batch's age, proxy/jobs/turnaround.py;
until learned, the turnaround estimate; past all that, the batch's own pace) and moves every job at risk to the
sync queue. A batch with nothing left worth waiting for is cancelled upstream.

A job still queued at that point was held back (the model's batch capacity was spent): it is sent at the flex
tier when the model has one and flex still meets the deadline (half price, like the batch), else at list price.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from proxy.jobs.service import cancel_batch
from proxy.jobs.timing import at_risk, flush_slack, remaining_estimate
from proxy.jobs.turnaround import Turnaround
from proxy.jobs.turnaround_book import for_batch
from proxy.reasons import RescueReason
from proxy.store.accounts import AccountProblem
from proxy.store.outcomes import Answer
from proxy.store.records import SYNC_OWNER, BatchRecord
from proxy.worker.accounts import HOLD_OWNER, account_error
from proxy.worker.context import WorkerContext, shielded
from proxy.worker.ingest import report_finished

log = logging.getLogger("batchgate.worker.rescuer")

WINDOW = 500
REACH_QUANTILE = 0.9999  # how far ahead deadlines are looked at: a running batch's conditional need can exceed p99


# (tag, group, batch id): have cancel_if_pointless run in a task of its own, off the guard's path
CancelLater = Callable[[str, str, str], object]


class Rescuer:
    def __init__(self, ctx: WorkerContext, *, cancel_later: CancelLater) -> None:
        self.ctx = ctx
        self.cancel_later = cancel_later

    async def guard(self, tag: str, group: str) -> bool:
        """One pass of the guard over a group; True when a job left a batch for the sync lane."""
        ctx = self.ctx
        now = ctx.clock()
        bands = await ctx.turnarounds.fresh(group)
        confidence = ctx.worker_config.turnaround_confidence
        turnaround = ctx.turnarounds.need_of(bands, group)  # what a batch started now is given
        margin = ctx.worker_config.safety_margin
        reach = max(turnaround, *(dist.quantile(REACH_QUANTILE) for dist in bands.values()))
        horizon = now + margin + reach + flush_slack(reach)
        entries = await ctx.store.outcomes.near_deadline(tag, until=horizon, limit=WINDOW)
        if not entries:
            return False
        batches: dict[str, BatchRecord | None] = {}
        emptied: set[str] = set()
        earliest: dict[str, float] = {}  # batch id -> the earliest deadline of its jobs in reach
        lead = ctx.worker_config.cancel_lead if ctx.worker_config.lane_rule == "expected_cost" else None
        stopped = await ctx.store.accounts.get(group)  # its provider takes no batch: no list-price rescue either
        for entry in entries:
            job_id, owner, deadline = entry.job_id, entry.owner, entry.deadline
            if entry.status is None or owner == SYNC_OWNER or entry.is_final:
                continue
            if owner:
                if owner not in batches:
                    batches[owner] = await ctx.store.batches.get(tag, owner)
                record = batches[owner]
                remaining = self._batch_remaining(
                    record, now, bands, confidence, starting=turnaround, last_moment=lead is not None
                )
                why = RescueReason.DEADLINE_AT_RISK_IN_BATCH
                earliest[owner] = min(deadline, earliest.get(owner, deadline))
            else:
                remaining = turnaround
                why = RescueReason.DEADLINE_AT_RISK_QUEUED
            if not at_risk(now, deadline=deadline, remaining=remaining, margin=margin):
                continue
            if stopped is not None:
                if await self._answer_stopped(job_id, owner, group, stopped) and owner and owner != HOLD_OWNER:
                    emptied.add(owner)
                continue
            lane = "sync" if owner else self.overflow_lane(group, now=now, deadline=deadline)
            if await ctx.store.outcomes.to_sync(job_id, expected_owner=owner, reason=why, lane=lane):
                log.info(
                    "deadline guard: job sent synchronously",
                    extra={"job": job_id, "group": group, "batch": owner or None, "reason": why.value,
                           "lane": lane, "seconds_left": round(deadline - now, 3)},
                )  # fmt: skip
                ctx.events.rescue(job_id=job_id, group=group, reason=why)
                if owner:
                    emptied.add(owner)
        await self._cancel_late(
            [
                record
                for batch_id, deadline in earliest.items()
                if cancel_due(record := batches[batch_id], bands, now, deadline=deadline, margin=margin, lead=lead)
            ]
        )
        for batch_id in emptied:
            self.cancel_later(tag, group, batch_id)
        return bool(emptied)

    async def _cancel_late(self, records: list[BatchRecord | None]) -> None:
        """Cancel running batches a job of which is near its last safe moment (see `cancel_due`)."""
        ctx = self.ctx
        for record in filter(None, records):
            await cancel_batch(
                ctx.store,
                ctx.runtime.batch_client,
                record,
                recheck_in=ctx.worker_config.poll_interval_min,
                why="batch cancelled: a job's last safe moment is near and the batch has not ended (its finished "
                "lines answer their jobs, the others are re-batched or rescued)",
            )

    def overflow_lane(self, group: str, *, now: float, deadline: float) -> str:
        """The lane of a queued job that can no longer wait for a batch (batch capacity held it back): `flex`
        (OpenAI `service_tier: "flex"`, batch price) when the model has a flex tier and its turnaround still
        meets the deadline, else `sync` at list price. A flex call refused for capacity falls back to list price
        in the sync lane."""
        ctx = self.ctx
        need = ctx.worker_config.flex_turnaround + ctx.worker_config.safety_margin
        return "flex" if ctx.supports_flex(group) and now + need <= deadline else "sync"

    async def _answer_stopped(self, job_id: str, owner: str, group: str, problem: AccountProblem) -> bool:
        """Fail a job at risk whose provider has an account problem, with an error naming it; True if answered."""
        ctx = self.ctx
        if not owner:
            if not await ctx.store.outcomes.hold_queued(job_id, owner=HOLD_OWNER):
                return False
            owner = HOLD_OWNER
        answer = Answer(job_id, owner, "failed", "batch", error=account_error(problem))
        [done] = await shielded(ctx.store.outcomes.finish_many([answer], retention=ctx.worker_config.result_ttl))
        if done is None:
            return False
        log.warning(
            "deadline guard: job failed, its provider has an account problem",
            extra={"job": job_id, "group": group, "code": problem.code},
        )
        report_finished(ctx, done)
        return True

    @staticmethod
    def _batch_remaining(
        record: BatchRecord | None,
        now: float,
        bands: dict[str, Turnaround],
        confidence: float,
        *,
        starting: float,
        last_moment: bool = False,
    ) -> float:
        """Seconds the job's batch still needs at `confidence`, given that it has not ended yet (`starting` when it
        is not yet running upstream). `last_moment`
        (lane_rule expected_cost): 0 for a running batch whose turnaround is learned, i.e. its jobs wait for it
        until their last safe moment (deadline less the safety margin, which the sync call needs), and only then
        are rescued: the rescue, not the batch's turnaround, keeps the deadline."""
        if record is None or record.state not in ("building", "uploaded", "submitted"):
            return starting
        dist = for_batch(bands, record.jobs)
        if record.state != "submitted":  # not yet running upstream: what a batch started now is given; but
            # waiting for the last safe moment, its line goes upstream whatever we do (a rescue now would leave
            # it billed), and a late batch is cancelled before it finishes a line
            return 0.0 if last_moment and dist.learned else starting
        started = record.submitted_at or record.created_at
        if not dist.learned:
            return remaining_estimate(now, started_at=started, turnaround=dist.prior, progress=record.progress)
        if last_moment or (record.progress is not None and record.progress >= 1):
            return 0.0
        left = dist.remaining(now - started, confidence)
        if left is not None:
            return left
        # older than every batch seen: only its own pace can tell (none known: the safety margin alone)
        return remaining_estimate(now, started_at=started, turnaround=0.0, progress=record.progress)


def cancel_due(
    record: BatchRecord | None,
    bands: dict[str, Turnaround],
    now: float,
    *,
    deadline: float,
    margin: float,
    lead: float | None,
) -> bool:
    """Whether a running batch (learned turnaround) should be cancelled now for a job due at `deadline`: within
    `lead` seconds of the job's last safe moment (deadline less `margin`); never with no `lead` (lane_rule
    confidence). Cancelling then, rather than rescuing
    the job and letting the batch run on, means the lines it finished answer their jobs, the lines it did not are
    never billed (no waste), and its other jobs start again in a fresh batch (a batch that slow is more likely to
    be slower still than a new one is)."""
    if lead is None or record is None or record.state != "submitted" or record.cancel_requested:
        return False
    if not record.provider_batch_id or not for_batch(bands, record.jobs).learned:
        return False
    return now + lead >= deadline - margin
