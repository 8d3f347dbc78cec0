"""Capacity-aware submission: each model's enqueued-token budget, and what a capacity refusal does.

OpenAI and Azure cap the prompt tokens of a model's open batches (validating, in progress, finalizing) per
organisation; a batch that would go over is refused with `token_limit_exceeded`, as a `failed` batch (OpenAI) or a
400 on create (Azure "fail-fast"). That is transient capacity, not bad input, so:

- the submitter claims from a queue only what fits the budget less the tokens of the group's open batches
  (`Capacity.headroom`), and holds the rest in the queue (most urgent first) until a batch ends;
- a refused batch keeps its uploaded input and is created again after a back-off; its jobs spend no attempt.
  A batch bigger than the whole budget goes back to the queue (no attempt spent) to be claimed in smaller
  batches. A limit the provider names in its message ("Limit: 90,000 enqueued tokens") lowers the budget, and
  is remembered in the store for REPORT_TTL;
- jobs held too long are still answered in time: the deadline guard moves them to the synchronous lane.

Estimator (proxy/token_estimate.py): a job costs the estimated tokens of its batch line, computed once at accept
(1/3 token per ASCII character, 1 per other character, 4 per emoji-class character) and stored with the job, so
claiming in tokens is free; a prepared batch records the sum of its lines. It never fell below litellm's count
on English, digits, code, CJK, Hangul, Thai, Devanagari or emoji (1.0x-3.4x over), where bytes / 4 under-counted
CJK (0.75x) and emoji (0.67x), and a batch the provider refuses while our estimate says it fits would wait for
capacity without end. litellm.token_counter costs ~0.23 ms a line: too much to run per job on every claim.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from proxy.jobs.timing import flush_by
from proxy.providers.base import BatchClient, BatchInfo, BatchState, ProviderError
from proxy.store.records import BatchRecord
from proxy.token_estimate import ASCII_CHARS_PER_TOKEN
from proxy.worker.context import WorkerContext

log = logging.getLogger("batchgate.worker.capacity")

CAPACITY_CODE = "token_limit_exceeded"
# Usage tier 1 batch queue limit of gpt-4o-mini-class models, per model (OpenAI rate-limits guide; Azure's global
# batch has its own quota, of the same order for a default deployment). Anthropic caps requests, not tokens.
TIER_LIMITS = {"openai": 2_000_000, "azure": 2_000_000}
REPORT_TTL = 24 * 3600.0  # a reported limit is trusted for a day: tiers only rise
_LIMIT = re.compile(r"Limit:\s*([\d,]+)")


def estimated_tokens(record: BatchRecord) -> int:
    """Prompt tokens a batch holds upstream: its lines' estimate once prepared; before that, its JSONL bytes
    (never fewer than the tokens they hold)."""
    return record.tokens or record.size


def reported_limit(message: str | None) -> int | None:
    """The limit a `token_limit_exceeded` message names ("Limit: 2,000,000 enqueued tokens"), or None."""
    found = _LIMIT.search(message or "")
    digits = found.group(1).replace(",", "") if found else ""
    return int(digits) if digits.isdigit() and int(digits) > 0 else None


def refused_for_capacity(info: BatchInfo) -> bool:
    """Whether an ended batch is the OpenAI form of a capacity refusal (failed, `token_limit_exceeded`)."""
    return info.state is BatchState.FAILED and CAPACITY_CODE in info.error_codes


class Capacity:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def configured(self, group: str) -> int | None:
        """The group's configured budget (`batch.enqueued_token_limit`), else its provider's tier default; None
        for a provider without a token limit."""
        limit = self.ctx.knobs(group).enqueued_token_limit
        if limit is not None:
            return limit
        deployment = self.ctx.runtime.config.deployment(group)
        return TIER_LIMITS.get(deployment.litellm_params.provider) if deployment else None

    async def budget(self, tag: str, group: str) -> int | None:
        """The configured budget, lowered to the limit the provider last reported."""
        configured = self.configured(group)
        reported = await self.ctx.store.batches.reported_token_limit(tag)
        if configured is None or reported is None:
            return reported if configured is None else configured
        return min(configured, reported)

    async def headroom(self, tag: str, group: str) -> int | None:
        """Tokens a new batch may hold: the budget less the estimated tokens of every open batch of the group
        (negative when over; None: no budget). Publishes the gauges."""
        budget = await self.budget(tag, group)
        records = await self.ctx.store.batches.open_records(tag)
        enqueued = sum(estimated_tokens(record) for record in records if record.state != "ended")
        self.ctx.runtime.metrics.record_capacity(queue=group, enqueued=enqueued, budget=budget)
        return None if budget is None else budget - enqueued

    async def room(self, tag: str, group: str) -> int | None:
        """The headroom, or 0 while it is smaller than the queue's average job (its bytes at the ASCII rate): no
        batch is built that would only be refused (the claim takes only jobs that fit the headroom)."""
        headroom = await self.headroom(tag, group)
        if headroom is None or headroom <= 0:
            return headroom
        stats = await self.ctx.store.batches.queue_stats(tag)
        average = stats.bytes / stats.count if stats.count else 0
        return headroom if headroom * ASCII_CHARS_PER_TOKEN >= average else 0

    async def refused(self, record: BatchRecord, message: str | None) -> None:
        """A batch the provider refused for its enqueued-token limit (on create, or failed upstream after the
        create; the record is `uploaded`, its input kept): learn the limit, then either try the same input again
        after a back-off, or, when the batch alone exceeds the budget, give its jobs back to the queue."""
        ctx = self.ctx
        record = await ctx.store.batches.get(record.tag, record.id) or record  # the file id, if set since
        ctx.runtime.metrics.record_capacity_refusal(record.group)
        limit = reported_limit(message)
        if limit is not None:
            await ctx.store.batches.report_token_limit(record.tag, limit, ttl=REPORT_TTL)
        budget = await self.budget(record.tag, record.group)
        tokens = estimated_tokens(record)
        extra = {"batch": record.id, "group": record.group, "tokens": tokens, "budget": budget}
        if budget is not None and tokens > budget and record.jobs > 1:
            log.warning("batch larger than the enqueued-token budget: its jobs are queued again", extra=extra)
            await self._release(record)
            return
        wait = ctx.worker_config.poll_interval_max  # capacity frees when a batch ends: the poller sees it by then
        log.warning("provider batch queue full; the batch waits for capacity", extra={**extra, "retry_in": wait})
        await ctx.store.batches.schedule(record.tag, record.id, at=ctx.clock() + wait)

    async def batch_failed(self, record: BatchRecord, info: BatchInfo) -> bool:
        """The OpenAI form: a submitted batch that failed with `token_limit_exceeded` goes back to `uploaded`
        (the same input is created again later; recovery skips provider batches refused that way). False when
        the batch did not fail for capacity."""
        if not refused_for_capacity(info):
            return False
        moved = await self.ctx.store.batches.advance(
            record.tag, record.id, expected="submitted", state="uploaded", provider_state=info.state.value
        )
        if moved:
            await self.refused(replace(record, state="uploaded"), info.errors)
        return True

    async def upload_outdated(self, record: BatchRecord, client: BatchClient) -> bool:
        """An uploaded batch that lost jobs while it waited (the deadline guard took them to the synchronous
        lane) must not be created as it stands, or those jobs run twice: back to `building`, input dropped.
        True when it moved."""
        ctx = self.ctx
        if record.state != "uploaded" or not record.lines:
            return False
        if await ctx.store.batches.remaining(record.tag, record.id) >= record.lines:
            return False
        if not await ctx.store.batches.advance(record.tag, record.id, expected="uploaded", state="building"):
            return False
        if record.file_id:
            try:
                await client.cleanup(record.file_id)
            except ProviderError as exc:  # costs only storage
                log.info("could not drop an outdated input: %s", exc, extra={"batch": record.id})
        log.info("waiting batch lost jobs; preparing it again", extra={"batch": record.id, "group": record.group})
        return True

    async def _release(self, record: BatchRecord) -> None:
        """Every job the batch holds back to the queue at its first score (deadline order), no attempt spent;
        the batch and its input are dropped."""
        ctx = self.ctx
        knobs = ctx.knobs(record.group)
        margin = ctx.worker_config.safety_margin
        ids = await ctx.store.batches.job_ids(record.tag, record.id)
        for job_id, job in zip(ids, await ctx.store.jobs.get_many(ids), strict=True):
            if job is None or job.is_final or job.owner != record.id:
                continue
            max_wait = job.max_wait if job.max_wait is not None else knobs.max_wait
            score = flush_by(  # the score it was queued with first: due as before, in the same order
                job.created_at,
                deadline=job.deadline,
                max_wait=max_wait,
                turnaround=ctx.turnaround(record.group),
                margin=margin,
            )
            await ctx.store.outcomes.requeue(job_id, owner=record.id, score=score, count_attempt=False)
        await ctx.store.batches.close(record.tag, record.id, retention=60)
        if record.file_id:
            try:
                await ctx.runtime.batch_client(record.group).cleanup(record.file_id)
            except ProviderError as exc:
                log.info("could not drop a released input: %s", exc, extra={"batch": record.id})
