"""A batch the provider failed as a whole (OpenAI `failed`, `errors.data[]`): act on why.

- an account problem (quota, billing) stops submission to the provider (worker/accounts.py); the jobs go back
  to the queue without spending an attempt and wait there for the probe or the deadline guard;
- refused lines the provider names fail alone, with the provider's message; every other job is sent again at once
  in a new batch, without spending an attempt;
- a refusal that names no line is narrowed down by bisection: the batch's jobs are split in halves, each sent as
  a batch of its own, and so on until the refused request is alone in its batch (it then fails alone);
- anything else (the enqueued-token limit, a failure with no reason given) is left to the retry rules of ingest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from proxy.errors import error_object
from proxy.jobs.timing import batch_lane_fits
from proxy.providers.base import BatchInfo, BatchIssue, ErrorClass, classify
from proxy.store.outcomes import Answer
from proxy.store.records import BatchRecord
from proxy.worker.accounts import AccountStop, problem_code
from proxy.worker.context import WorkerContext

log = logging.getLogger("batchgate.worker.triage")

# Refusals of the batch's size, not of a line's content (the line they name is merely the first one over the
# limit): the batch is halved, no job fails for them.
BATCH_SHAPE_CODES = frozenset({"too_many_requests"})


class Counts(Protocol):
    retried: int


C = TypeVar("C", bound=Counts)


def issue_class(issue: BatchIssue) -> ErrorClass:
    """What a batch-level issue is, by its code (a whole-batch validation failure is a 400 upstream)."""
    return classify(400, issue.code)


def issue_error(issue: BatchIssue) -> dict[str, object]:
    return error_object(issue.message or "The provider refused this request.", "invalid_request_error",
                        code=issue.code)  # fmt: skip


class FailedBatch(Generic[C]):
    """`finish` records final answers and counts them in the tally it is given."""

    def __init__(
        self, ctx: WorkerContext, accounts: AccountStop, finish: Callable[[Sequence[Answer], C], Awaitable[object]]
    ) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.finish = finish

    async def handle(self, record: BatchRecord, info: BatchInfo, tally: C) -> bool:
        """Act on a failed batch when its issues say what to do; False to leave it to the usual retry rules."""
        issues = list(info.issues)
        if not issues:
            return False
        account = next((issue for issue in issues if issue_class(issue) is ErrorClass.ACCOUNT_PROBLEM), None)
        if account is not None:
            await self.accounts.report(
                record.group, code=problem_code(None, account.code), message=account.message, status=None,
                where="batch",
            )  # fmt: skip
            await self._requeue_all(record, tally)
            return True
        if any(issue_class(issue).transient for issue in issues):
            return False
        if not await self._room_for_another_batch(record):
            return False  # no job can wait for another batch: the retry rules send them to the sync lane
        shape_only = all(issue.code in BATCH_SHAPE_CODES for issue in issues)
        if not shape_only and await self._fail_named(record, issues, tally):
            return True
        await self._bisect(record, issues, tally)
        return True

    async def _room_for_another_batch(self, record: BatchRecord) -> bool:
        """Whether any job of the batch can still wait for another batch before its deadline."""
        ctx = self.ctx
        turnaround, margin = ctx.turnaround(record.group), ctx.worker_config.safety_margin
        now = ctx.clock()
        views = await ctx.store.jobs.get_many(await ctx.store.batches.job_ids(record.tag, record.id))
        return any(
            view is not None
            and batch_lane_fits(
                now,
                deadline=view.deadline,
                turnaround=turnaround,
                margin=margin,
            )
            for view in views
        )

    async def _requeue_all(self, record: BatchRecord, tally: C) -> None:
        ctx = self.ctx
        now = ctx.clock()
        for job_id in await ctx.store.batches.job_ids(record.tag, record.id):
            if await ctx.store.outcomes.requeue(job_id, owner=record.id, score=now, count_attempt=False):
                tally.retried += 1

    async def _fail_named(self, record: BatchRecord, issues: list[BatchIssue], tally: C) -> bool:
        """Fail the jobs on the lines the provider names and send the rest again; False when no named line could
        be matched to a job (no line numbers, or no recorded line order)."""
        ctx = self.ctx
        named = {issue.line: issue for issue in issues if issue.line is not None and issue.line >= 1}
        if not named:
            return False
        jobs = await ctx.store.batches.jobs_on_lines(record.tag, record.id, sorted(named))
        if not jobs:
            return False
        answers = [Answer(job_id, record.id, "failed", "batch", error=issue_error(named[line]))
                   for line, job_id in jobs.items()]  # fmt: skip
        await self.finish(answers, tally)
        log.warning(
            "batch refused for named lines: those jobs fail alone, the others are sent again",
            extra={"batch": record.id, "group": record.group, "lines": sorted(jobs), "jobs": sorted(jobs.values())},
        )
        await self._send_again(record, await ctx.store.batches.job_ids(record.tag, record.id), tally)
        return True

    async def _bisect(self, record: BatchRecord, issues: list[BatchIssue], tally: C) -> None:
        """No line named: a lone job is the refused one; more are split in halves, each sent as its own batch."""
        ctx = self.ctx
        ids = sorted(await ctx.store.batches.job_ids(record.tag, record.id))
        if len(ids) == 1 and record.lines > 1:
            await self._send_again(record, ids, tally)  # sent with others (since rescued): not proven guilty yet
            return
        if len(ids) == 1:
            issue = issues[0]
            log.warning("bisection found the refused request", extra={"batch": record.id, "job": ids[0]})
            await self.finish([Answer(ids[0], record.id, "failed", "batch", error=issue_error(issue))], tally)
            return
        half = len(ids) // 2
        log.warning(
            "batch refused without naming a line: bisecting",
            extra={"batch": record.id, "group": record.group, "jobs": len(ids), "code": issues[0].code},
        )
        for part in (ids[:half], ids[half:]):
            await self._send_again(record, part, tally)

    async def _send_again(self, record: BatchRecord, job_ids: list[str], tally: C) -> None:
        if not job_ids:
            return
        new_batch = await self.ctx.store.batches.split_off(record.tag, record.group, record.id, job_ids)
        if new_batch is not None:
            tally.retried += len(job_ids)
            log.info("jobs sent again in a new batch", extra={"batch": new_batch, "from_batch": record.id,
                                                               "jobs": len(job_ids)})  # fmt: skip
