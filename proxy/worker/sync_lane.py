"""The synchronous lane of deferred jobs: deadlines too short for a batch, and rescues by the deadline guard.

Jobs are claimed from a group's sync queue into its in-flight ZSET (scored by when the claim lapses), so a dead
worker's calls are taken up again. `flex` jobs try `service_tier: "flex"` first and fall back to an ordinary
call when flex capacity is unavailable (429).

A call is abandoned before it starts when its job was answered meanwhile (e.g. by its batch line); one already
running cannot be recalled (the provider bills it), so its answer, if no job takes it, is recorded as waste.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import orjson
import redis

from proxy.errors import provider_error_object
from proxy.events import WastedLine
from proxy.providers.base import ProviderError, UpstreamResponse
from proxy.providers.failures import upstream_failure
from proxy.reasons import RescueReason, WasteReason
from proxy.store.outcomes import Answer
from proxy.store.records import SYNC_OWNER, JobView
from proxy.venues import declared, price_rule
from proxy.worker.context import WorkerContext, shielded
from proxy.worker.ingest import report_finished

log = logging.getLogger("batchgate.worker.sync_lane")

MAX_SYNC_ATTEMPTS = 4
RETRY_BASE = 1.0
RETRY_CAP = 30.0


class SyncLane:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.running: dict[asyncio.Task[None], str] = {}  # call -> the job id it answers

    @property
    def claim_seconds(self) -> float:
        config = self.ctx.runtime.config
        return config.limits.upstream_timeout + config.retry.budget + config.worker.lease

    async def claim(self, tag: str, group: str) -> bool:
        """Take up lapsed claims of the group, then start a call (its own task) for each job its sync queue has
        ready, up to `sync_concurrency` in flight; True when any was started."""
        await self.ctx.store.outcomes.reclaim_sync(tag)
        free = self.ctx.worker_config.sync_concurrency - len(self.running)
        if free <= 0 or self.ctx.stopping.is_set():
            return False
        worked = False
        for job_id in await self.ctx.store.outcomes.claim_sync(tag, limit=free, claim_seconds=self.claim_seconds):
            task = asyncio.create_task(self.answer(job_id, group))
            self.running[task] = job_id
            task.add_done_callback(self._forget)
            worked = True
        return worked

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)

    async def drain(self) -> None:
        """Wait for the calls in flight to finish."""
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)

    async def hand_back(self) -> int:
        """Stop the calls still in flight and put their jobs back in the sync queue, ready for another worker
        now rather than when the claims would lapse. Returns how many were handed back."""
        calls = dict(self.running)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        handed = 0
        for job_id in calls.values():
            try:
                handed += await self.ctx.store.outcomes.release_sync(job_id)
            except redis.RedisError:
                log.warning("could not hand a sync call back; its claim will lapse", extra={"job": job_id})
        if handed:
            log.info("sync calls handed back", extra={"worker": self.ctx.worker_id, "jobs": handed})
        return handed

    async def answer(self, job_id: str, group: str) -> None:
        try:
            await self._answer(job_id, group)
        except Exception:
            log.exception("sync lane call failed unexpectedly", extra={"job": job_id, "group": group})
            self.ctx.runtime.metrics.record_task_failure("sync")
            await self.ctx.store.outcomes.retry_sync(job_id, ready_at=self.ctx.clock() + RETRY_BASE)

    async def _answer(self, job_id: str, group: str) -> None:
        ctx = self.ctx
        found = await ctx.store.jobs.get_with_body(job_id)
        job, raw_body = found if found is not None else (None, None)
        if job is None or job.is_final or job.owner != SYNC_OWNER or raw_body is None:
            await ctx.store.outcomes.drop_sync_claim(job_id)
            return
        body = orjson.loads(raw_body)
        body.pop("stream", None)
        body.pop("stream_options", None)
        lane = "flex" if job.lane == "flex" and ctx.supports_flex(group) else "sync"
        fallback: RescueReason | None = None
        venue = declared(ctx.runtime.config.policy.venues, job.venue)
        price = price_rule(venue, datetime.fromtimestamp(ctx.clock(), UTC)) if venue is not None else None
        client = ctx.runtime.completion_client(group)
        try:
            if lane == "flex":
                response = await client.complete({**body, "service_tier": "flex"})
                if response.status == 429:
                    ctx.events.upstream_error(lane="flex", status=429)
                    log.info("flex unavailable; answering at list price", extra={"job": job_id})
                    ctx.events.rescue(job_id=job_id, group=group, reason=RescueReason.FLEX_UNAVAILABLE)
                    lane, fallback = "sync", RescueReason.FLEX_UNAVAILABLE
                    response = await client.complete(body)
            else:
                response = await client.complete(body)
        except ProviderError as exc:
            failure = upstream_failure(exc)
            response = UpstreamResponse(failure.status, orjson.dumps(failure.body()))
        if response.status >= 400:
            ctx.events.upstream_error(lane=lane, status=response.status)
        if 200 <= response.status < 300:
            request_id = response.headers.get("x-request-id")
            await self._finish(
                Answer(job_id, SYNC_OWNER, "completed", lane, response=response.body, upstream_request_id=request_id,
                       rescue_reason=fallback, price=price)
            )  # fmt: skip
        elif response.status == 429 or response.status >= 500:
            await self._retry_or_fail(job, lane, response)
        else:
            error = provider_error_object(response.status, response.body)
            await self._finish(Answer(job_id, SYNC_OWNER, "failed", lane, error=error))

    async def _retry_or_fail(self, job: JobView, lane: str, response: UpstreamResponse) -> None:
        ctx = self.ctx
        now = ctx.clock()
        delay = min(RETRY_CAP, RETRY_BASE * 2**job.attempts)
        in_time = job.deadline is None or now + delay < job.deadline
        if job.attempts + 1 < MAX_SYNC_ATTEMPTS and in_time:
            log.info("sync lane retries later", extra={"job": job.id, "status": response.status, "delay": delay})
            await ctx.store.outcomes.retry_sync(job.id, ready_at=now + delay, lane=job.lane)
            return
        error = provider_error_object(response.status, response.body)
        await self._finish(Answer(job.id, SYNC_OWNER, "failed", lane, error=error))

    async def _finish(self, answer: Answer) -> None:
        await shielded(self._record(answer))  # a hand-back must not lose an answer already paid for

    async def _record(self, answer: Answer) -> None:
        done = await self.ctx.store.outcomes.finish(answer, retention=self.ctx.worker_config.result_ttl)
        if done is not None:
            report_finished(self.ctx, done)
        elif answer.status == "completed":
            await self._wasted(answer)

    async def _wasted(self, answer: Answer) -> None:
        """A billed answer its job no longer wanted (answered by its batch line meanwhile, or cancelled)."""
        job = await self.ctx.store.jobs.get(answer.job_id)
        if job is None:
            log.warning("a billed sync answer has no job left to charge", extra={"job": answer.job_id})
            return
        if job.status == "cancelled":
            reason = WasteReason.CANCELLED
        elif job.is_final:
            reason = WasteReason.ANSWERED_ELSEWHERE
        else:
            reason = WasteReason.DUPLICATE
        source = f"sync-{answer.upstream_request_id or uuid.uuid4().hex}"
        self.ctx.events.line_wasted(
            WastedLine(job_id=answer.job_id, team=job.team, model=job.model, lane=answer.lane, reason=reason,
                       source=source, at=self.ctx.clock(), response=answer.response)
        )  # fmt: skip
