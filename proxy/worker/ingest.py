"""An ended batch's results -> jobs: answer each line exactly once, retry the transient ones, fail the rest.

Every succeeded line is billed, so every one is recorded once: as its job's answer (and cost), or, when the job
no longer wants it (answered elsewhere, cancelled, held by another batch), as waste with its reason. A job
rescued to the sync lane and not yet answered takes its batch line (paying the batch price); a sync call not yet
started for it is then dropped. Safe to run again after a crash half-way: a job already answered by this line
is skipped, and a wasted line is recorded once per batch (its ledger marker).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.errors import error_object
from proxy.events import WastedLine
from proxy.jobs.timing import batch_lane_fits, flush_by
from proxy.pricing import Usage
from proxy.providers import openai_shape
from proxy.providers.base import BatchInfo, BatchState, LineOutcome, ResultLine
from proxy.reasons import FailureReason, RescueReason, WasteReason
from proxy.reconciliation import Recorded
from proxy.store.jobs import valid_job_id
from proxy.store.outcomes import Answer, Finished
from proxy.store.records import SYNC_OWNER, BatchRecord, JobView
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
    wasted: int = 0
    recorded: Recorded = field(default_factory=Recorded)  # billed lines priced (answers and waste)


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
        if record.cancel_requested:  # we cancelled it (a job's last safe moment was near): not the jobs' fault
            rescue = RescueReason.DEADLINE_AT_RISK_IN_BATCH
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
        unwanted = [answer for answer, done in zip(answers, await self.finish(answers, tally), strict=True)
                    if done is None and answer.status == "completed"]  # fmt: skip
        for answer in answers:
            if answer.status == "completed":
                tally.recorded.add(_usage(answer.response))
        await self._settle_unwanted(record, unwanted, tally)
        for rescue, items in transient.items():
            await self.retry_or_fail(record, items, tally, rescue=rescue)

    async def _settle_unwanted(self, record: BatchRecord, answers: Sequence[Answer], tally: Tally) -> None:
        """Lines whose job this batch no longer held: a rescued job still waiting takes its line; every other
        line is recorded as waste (or skipped when it is the job's own answer, ingested again)."""
        if not answers:
            return
        views = await self.ctx.store.jobs.get_many([answer.job_id for answer in answers])
        takers = [
            Answer(answer.job_id, SYNC_OWNER, "completed", "batch", response=answer.response,
                   upstream_request_id=answer.upstream_request_id)
            for answer, job in zip(answers, views, strict=True)
            if job is not None and not job.is_final and job.owner == SYNC_OWNER
        ]  # fmt: skip
        taken = {done.job_id for done in await self.finish(takers, tally) if done is not None}
        if taken:
            log.info("rescued jobs answered by their batch line", extra={"batch": record.id, "jobs": len(taken)})
        left = [answer for answer in answers if answer.job_id not in taken]
        views = await self.ctx.store.jobs.get_many([answer.job_id for answer in left]) if left else []
        for answer, job in zip(left, views, strict=True):
            reason = waste_reason(job, answer, record.id)
            if job is None or reason is None:
                continue
            tally.wasted += 1
            self.ctx.events.line_wasted(
                WastedLine(job_id=answer.job_id, team=job.team, model=job.model, lane="batch", reason=reason,
                           source=record.id, at=self.ctx.clock(), response=answer.response)
            )  # fmt: skip

    async def finish(self, answers: Sequence[Answer], tally: Tally) -> list[Finished | None]:
        """Record final answers (shielded: a cancelled ingest still finishes the chunk it was writing); the
        jobs each answered (None where the job was not this owner's to answer)."""
        return await shielded(self._finish(answers, tally))

    async def _finish(self, answers: Sequence[Answer], tally: Tally) -> list[Finished | None]:
        results = await self.ctx.store.outcomes.finish_many(answers, retention=self.ctx.worker_config.result_ttl)
        for answer, done in zip(answers, results, strict=True):
            if done is None:
                continue
            if answer.status == "completed":
                tally.succeeded += 1
            else:
                tally.failed += 1
            report_finished(self.ctx, done)
        return results

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
            # an expired batch (or one we cancelled) is not the job's fault: its deadline alone bounds the retries
            capacity = (rescue is RescueReason.BATCH_EXPIRED or record.cancel_requested) and job.deadline is not None
            exhausted = job.batch_failures >= 1 if batch_failure else job.attempts + 1 >= MAX_ATTEMPTS and not capacity
            if not exhausted and batch_lane_fits(
                now, deadline=job.deadline, turnaround=ctx.turnaround(record.group), margin=margin
            ):
                score = flush_by(
                    now,
                    deadline=job.deadline,
                    max_wait=job.max_wait if job.max_wait is not None else knobs.max_wait,
                    turnaround=ctx.turnaround(record.group),
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


def _usage(response: bytes | None) -> Usage:
    try:
        parsed = orjson.loads(response) if response else None
    except orjson.JSONDecodeError:
        return Usage()
    return Usage.from_openai(parsed.get("usage")) if isinstance(parsed, dict) else Usage()


def waste_reason(job: JobView | None, answer: Answer, batch_id: str) -> WasteReason | None:
    """Why a succeeded line of `batch_id` is waste; None when it is its job's own answer (or the job is gone)."""
    if job is None:
        log.warning("a billed batch line has no job left to charge", extra={"job": answer.job_id, "batch": batch_id})
        return None
    if job.status == "cancelled":
        return WasteReason.CANCELLED
    if job.is_final and job.lane == "batch":
        own = answer.upstream_request_id is not None and job.upstream_request_id == answer.upstream_request_id
        return None if own or (answer.upstream_request_id is None and job.batch == batch_id) else WasteReason.DUPLICATE
    if job.is_final:
        return WasteReason.ANSWERED_ELSEWHERE
    return WasteReason.DUPLICATE  # still held by another batch, which will answer it


def report_finished(ctx: WorkerContext, done: Finished) -> None:
    ctx.events.job_finished(done)
    if done.missed_deadline:
        log.warning(
            "job answered after its deadline",
            extra={"job": done.job_id, "lane": done.lane, "late_by": round(done.finished_at - (done.deadline or 0), 3)},
        )
        ctx.events.deadline_missed(done)
