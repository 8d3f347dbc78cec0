"""An ended batch's results -> jobs: answer each line exactly once, retry the transient ones, fail the rest.

Safe to run again after a crash half-way: a job already answered or no longer owned by this batch is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import error_object
from proxy.jobs.timing import batch_lane_fits, flush_by
from proxy.providers import openai_shape
from proxy.providers.base import BatchInfo, BatchState, LineOutcome, ResultLine
from proxy.reasons import FailureReason, RescueReason
from proxy.store.jobs import valid_job_id
from proxy.store.outcomes import Answer, Finished
from proxy.store.records import BatchRecord
from proxy.worker.accounts import AccountStop
from proxy.worker.context import WorkerContext, shielded
from proxy.worker.triage import FailedBatch

log = logging.getLogger("batchgate.worker.ingest")

CHUNK = 500
MAX_ATTEMPTS = 3  # batch submissions of one job before a transient error becomes final


@dataclass
class Tally:
    succeeded: int = 0
    retried: int = 0
    failed: int = 0


def line_error(line: ResultLine) -> dict[str, Any]:
    """The provider's error object for a line, in the OpenAI shape."""
    if line.body is not None and isinstance(line.body.get("error"), dict):
        return dict(line.body["error"])
    message = line.error_message or f"The batch line ended as {line.outcome.value}."
    return error_object(message, "batch_error", code=line.error_code)


def line_rescue_reason(line: ResultLine) -> RescueReason:
    """Why a transient line's job goes synchronous when no time is left for another batch."""
    return RescueReason.BATCH_EXPIRED if line.outcome is LineOutcome.EXPIRED else RescueReason.LINE_ERROR


def leftover_reasons(state: BatchState) -> tuple[FailureReason, RescueReason]:
    """Why the jobs an ended batch has no line for fail, or are rescued: it expired (or was lost), or not."""
    if state is BatchState.EXPIRED:
        return FailureReason.BATCH_EXPIRED, RescueReason.BATCH_EXPIRED
    return FailureReason.MISSING_RESULT, RescueReason.LINE_ERROR


class Ingester:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.failed_batch = FailedBatch(ctx, AccountStop(ctx), self.finish)

    async def ingest(self, record: BatchRecord, info: BatchInfo) -> Tally:
        tally = Tally()
        if info.state is BatchState.FAILED and await self.failed_batch.handle(record, info, tally):
            return tally
        if info.state is BatchState.FAILED:
            message = info.errors or "The batch failed validation."
            error = error_object(message, "invalid_request_error", code=FailureReason.BATCH_FAILED)
            ids = await self.ctx.store.batches.job_ids(record.tag, record.id)
            items = [(job_id, error) for job_id in ids]
            await self.retry_or_fail(record, items, tally, rescue=RescueReason.BATCH_FAILED, batch_failure=True)
            return tally
        chunk: list[ResultLine] = []
        async for line in self.ctx.runtime.batch_client(record.group).results(info):
            chunk.append(line)
            if len(chunk) >= CHUNK:
                await self._apply(record, chunk, tally)
                chunk = []
                await self.ctx.checkpoint("during_ingest")
        await self._apply(record, chunk, tally)
        failure, rescue = leftover_reasons(info.state)
        message = f"The batch ended ({info.state.value}) without a result for this request."
        missing = error_object(message, "batch_error", code=failure)
        leftovers = await self.ctx.store.batches.job_ids(record.tag, record.id)
        await self.retry_or_fail(record, [(job_id, missing) for job_id in leftovers], tally, rescue=rescue)
        return tally

    async def _apply(self, record: BatchRecord, lines: Sequence[ResultLine], tally: Tally) -> None:
        answers: list[Answer] = []
        transient: dict[RescueReason, list[tuple[str, dict[str, Any]]]] = {}
        for line in lines:
            if not valid_job_id(line.custom_id):
                continue
            if line.outcome is LineOutcome.SUCCEEDED:
                response = orjson.dumps(openai_shape.completion(line.body or {}))  # OpenAI-exact, every provider
                answers.append(
                    Answer(line.custom_id, record.id, "completed", "batch", response=response,
                           upstream_request_id=line.request_id)
                )  # fmt: skip
            elif line.transient:
                transient.setdefault(line_rescue_reason(line), []).append((line.custom_id, line_error(line)))
            else:
                answers.append(
                    Answer(line.custom_id, record.id, "failed", "batch", error=line_error(line),
                           upstream_request_id=line.request_id)
                )  # fmt: skip
        await self.finish(answers, tally)
        for rescue, items in transient.items():
            await self.retry_or_fail(record, items, tally, rescue=rescue)

    async def finish(self, answers: Sequence[Answer], tally: Tally) -> None:
        """Record final answers (shielded: a cancelled ingest still finishes the chunk it was writing)."""
        await shielded(self._finish(answers, tally))

    async def _finish(self, answers: Sequence[Answer], tally: Tally) -> None:
        results = await self.ctx.store.outcomes.finish_many(answers, retention=self.ctx.worker_config.result_ttl)
        for answer, done in zip(answers, results, strict=True):
            if done is None:
                continue
            if answer.status == "completed":
                tally.succeeded += 1
            else:
                tally.failed += 1
            report_finished(self.ctx, done)

    async def retry_or_fail(
        self,
        record: BatchRecord,
        items: Sequence[tuple[str, dict[str, Any]]],
        tally: Tally,
        *,
        rescue: RescueReason,
        batch_failure: bool = False,
    ) -> None:
        """Queue again while the deadline allows; the synchronous lane (for `rescue`) when only it can still
        make it; else fail with each item's error."""
        if not items:
            return
        ctx = self.ctx
        knobs = ctx.knobs(record.group)
        margin = ctx.worker_config.safety_margin
        views = await ctx.store.jobs.get_many([job_id for job_id, _ in items])
        failures: list[Answer] = []
        for (job_id, error), job in zip(items, views, strict=True):
            if job is None or job.is_final or job.owner != record.id:
                continue
            now = ctx.clock()
            # an expired batch is the provider's capacity, not the job's fault: its deadline alone bounds the retries
            capacity = rescue is RescueReason.BATCH_EXPIRED and job.deadline is not None
            exhausted = job.batch_failures >= 1 if batch_failure else job.attempts + 1 >= MAX_ATTEMPTS and not capacity
            if not exhausted and batch_lane_fits(
                now, deadline=job.deadline, turnaround=knobs.turnaround_estimate, margin=margin
            ):
                score = flush_by(
                    now,
                    deadline=job.deadline,
                    max_wait=job.max_wait if job.max_wait is not None else knobs.max_wait,
                    turnaround=knobs.turnaround_estimate,
                    margin=margin,
                )
                if await ctx.store.outcomes.requeue(
                    job_id, owner=record.id, score=score, batch_failure=batch_failure, count_attempt=not capacity
                ):
                    tally.retried += 1
            elif not exhausted and job.deadline is not None and now < job.deadline:
                if await ctx.store.outcomes.to_sync(job_id, expected_owner=record.id, reason=rescue):
                    tally.retried += 1
                    log.info("job sent synchronously: no time left for another batch",
                             extra={"job": job_id, "reason": rescue.value, "code": error.get("code")})  # fmt: skip
                    ctx.events.rescue(job_id=job_id, group=record.group, reason=rescue)
            else:
                failures.append(Answer(job_id, record.id, "failed", "batch", error=error))
        await self.finish(failures, tally)


def report_finished(ctx: WorkerContext, done: Finished) -> None:
    ctx.events.job_finished(done)
    if done.missed_deadline:
        log.warning(
            "job answered after its deadline",
            extra={"job": done.job_id, "lane": done.lane, "late_by": round(done.finished_at - (done.deadline or 0), 3)},
        )
        ctx.events.deadline_missed(done)
