"""Queue -> provider batch: flush a group's queue when it is full, old enough or short of deadline slack.

A batch record moves building -> uploaded -> submitted, each step recorded before the next begins, so a
worker that dies anywhere leaves enough behind for the next one (`send(..., recovering=True)`): a building
batch is rebuilt from its job set and its input prepared again ("uploaded" = the provider adapter has
prepared its input: an uploaded file, a staged body); an uploaded one is looked up upstream by its metadata
and created only if it is not there. Jobs never leave the batch's job set until they are answered or
re-queued. The adapter owns the wire format: the submitter hands it `(job id, request body)` pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
import redis

from proxy import prompt_cache
from proxy.endpoints import Endpoint, endpoint_of
from proxy.providers.base import BatchClient, ErrorClass, ProviderError, min_requests
from proxy.providers.registry import batch_input_limit, batch_inputs
from proxy.store import keys
from proxy.store.jobs import line_tokens
from proxy.store.outcomes import Answer
from proxy.store.records import BatchRecord
from proxy.worker.accounts import AccountStop, is_account_problem
from proxy.worker.capacity import CAPACITY_CODE, Capacity, refused_for_capacity
from proxy.worker.context import WorkerContext
from proxy.worker.ingest import report_finished

log = logging.getLogger("batchgate.worker.submitter")

BATCH_METADATA_KEY = "batchgate_batch"
GROUP_METADATA_KEY = "batchgate_group"
RETRY_LATER = 5.0
# A full batch queue does not clear in seconds: look again less often.
RETRY_SLOWLY = 60.0


@dataclass(frozen=True, slots=True)
class CacheMarks:
    """The prompt-cache marks of one batch's lines (proxy/prompt_cache.py)."""

    provider: str
    prefixes: Mapping[str, prompt_cache.Prefix | None]
    marked: frozenset[str]

    def apply(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        prefix = self.prefixes.get(job_id)
        if prefix is None or prefix.digest not in self.marked:
            return body
        return prompt_cache.mark(body, self.provider, prefix)


class Submitter:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.accounts = AccountStop(ctx)
        self.capacity = Capacity(ctx)

    async def flush(self, tag: str, group: str, *, drain: bool = False) -> bool:
        """Send the group's queue as batches while it is due; `drain` flushes any non-empty queue (burst mode).
        True when a batch was sent."""
        if not await self.due(tag, group, drain=drain):
            return False
        ctx = self.ctx
        async with ctx.leases.held(keys.lease(tag, "flush")) as flushing:
            if not flushing:
                return False
            sent = False
            while not ctx.stopping.is_set() and await self.due(tag, group, drain=drain):
                knobs = ctx.knobs(group)
                headroom = await self.capacity.room(tag, group)
                if headroom is not None and headroom <= 0:
                    break  # held: the queue waits (most urgent first) until an open batch ends
                batch_id = await ctx.store.batches.open_batch(tag, group, look_again_in=ctx.worker_config.lease)
                async with ctx.leases.held(keys.lease(tag, f"batch:{batch_id}")) as mine:
                    if not mine:  # cannot happen for a fresh id; keep the record for recovery
                        break
                    try:
                        ids = await ctx.store.batches.claim_jobs(
                            tag, batch_id, limit=knobs.max_requests,
                            byte_budget=knobs.max_bytes, token_budget=headroom,
                            by_deadline=headroom is not None,  # capacity lets part in: earliest deadline first
                        )  # fmt: skip
                        if not ids:
                            await ctx.store.batches.close(tag, batch_id, retention=60)
                            break
                        record = await ctx.store.batches.get(tag, batch_id)
                        if record is not None:
                            await self.send(record, job_ids=ids)
                            sent = True
                    except asyncio.CancelledError:
                        await self._hand_back(tag, batch_id)
                        raise
            return sent

    async def _hand_back(self, tag: str, batch_id: str) -> None:
        """Stopped half-way through a submission: make the batch due now, so that whichever worker looks next
        carries it on (the recovery path) as soon as the lease is released, not a lease period later."""
        with contextlib.suppress(redis.RedisError):
            await asyncio.shield(self.ctx.store.batches.schedule(tag, batch_id, at=self.ctx.clock()))
        log.info("submission handed back", extra={"batch": batch_id, "worker": self.ctx.worker_id})

    async def due(self, tag: str, group: str, *, drain: bool = False) -> bool:
        """Whether the queue should be flushed now: full, old enough or short of deadline slack (`drain`: any
        job waiting)."""
        stats = await self.ctx.store.batches.queue_stats(tag)
        if stats.count == 0 or await self.accounts.blocked(group):
            return False
        if stats.count < self._minimum(group):
            return False  # held: the provider refuses a batch this small (more jobs or the deadline guard end it)
        knobs = self.ctx.knobs(group)
        now = self.ctx.clock()
        return (
            drain
            or stats.count >= knobs.max_requests
            or stats.bytes >= knobs.max_bytes
            or (stats.next_due is not None and stats.next_due <= now)
        )

    def _minimum(self, group: str) -> int:
        try:
            return min_requests(self.ctx.runtime.batch_client(group))
        except ProviderError:
            return 1

    async def send(self, record: BatchRecord, *, recovering: bool = False, job_ids: list[str] | None = None) -> None:
        """Take a batch from wherever it stands to `submitted`; the caller holds the batch's lease."""
        ctx = self.ctx
        client = ctx.runtime.batch_client(record.group)
        try:
            if await self.capacity.upload_outdated(record, client):
                record = replace(record, state="building")
            if record.state == "building":
                if not await self._prepare(record, client, job_ids):
                    return
                recovering = False
            refreshed = await ctx.store.batches.get(record.tag, record.id)
            if refreshed is None or refreshed.state != "uploaded" or refreshed.file_id is None:
                return
            if not await self._create(refreshed, client, recovering=recovering):
                return
        except ProviderError as exc:
            await self._failed(record, exc)
            return
        except OSError as exc:
            log.warning("batch submission failed; will retry: %r", exc, extra={"batch": record.id})
            await ctx.store.batches.schedule(record.tag, record.id, at=ctx.clock() + RETRY_LATER)
            return
        await self.mark_submitted(record.tag, record.id, job_ids)

    async def _failed(self, record: BatchRecord, exc: ProviderError) -> None:
        """Act on the provider's refusal: a refused line fails its job alone and the batch is built again
        without it; an account problem stops submission to the provider and hands the jobs back to the queue;
        anything else is tried again, later for a full queue."""
        ctx = self.ctx
        if exc.code == CAPACITY_CODE:
            await self.capacity.refused(record, exc.message)
            return
        extra = {"batch": record.id, "group": record.group, "error_class": exc.classification.value}
        if is_account_problem(exc):
            current = await ctx.store.batches.get(record.tag, record.id)
            stage = "upload" if current is None or current.state == "building" else "create"
            await self.accounts.report_error(record.group, exc, where=stage)
            await self._dissolve(record)
            return
        if exc.classification is ErrorClass.BAD_LINE and exc.custom_id is not None:
            log.warning("a request the provider refuses fails alone: %s", exc, extra={**extra, "job": exc.custom_id})
            await self._fail_line(record, exc)
            await ctx.store.batches.schedule(record.tag, record.id, at=ctx.clock())
            return
        slowly = exc.classification is ErrorClass.TRANSIENT_CAPACITY
        log.warning("batch submission failed; will retry: %s", exc, extra=extra)
        await ctx.store.batches.schedule(
            record.tag, record.id, at=ctx.clock() + (RETRY_SLOWLY if slowly else RETRY_LATER)
        )

    async def _dissolve(self, record: BatchRecord) -> None:
        """Give an unsubmitted batch's jobs back to the queue (no attempt spent: they were not at fault), drop its
        prepared input and close it; the jobs wait there for the probe or for the deadline guard."""
        ctx = self.ctx
        now = ctx.clock()
        for job_id in await ctx.store.batches.job_ids(record.tag, record.id):
            await ctx.store.outcomes.requeue(job_id, owner=record.id, score=now, count_attempt=False)
        current = await ctx.store.batches.get(record.tag, record.id)
        if current is not None and current.file_id:
            with contextlib.suppress(ProviderError):
                await ctx.runtime.batch_client(record.group).cleanup(current.file_id)
        await ctx.store.batches.close(record.tag, record.id, retention=60)

    async def _fail_line(self, record: BatchRecord, exc: ProviderError) -> None:
        assert exc.custom_id is not None
        error = {"message": exc.message, "type": "invalid_request_error", "param": None, "code": exc.code}
        answer = Answer(exc.custom_id, record.id, "failed", "batch", error=error)
        [done] = await self.ctx.store.outcomes.finish_many([answer], retention=self.ctx.worker_config.result_ttl)
        if done is not None:
            report_finished(self.ctx, done)

    async def _prepare(self, record: BatchRecord, client: BatchClient, job_ids: list[str] | None) -> bool:
        ctx = self.ctx
        ids = job_ids if job_ids is not None else await ctx.store.batches.job_ids(record.tag, record.id)
        ids = await self._within_input_limit(record, ids)
        if not ids:
            return await self._nothing_to_send(record)
        await ctx.checkpoint("before_upload")
        order: list[str] = []
        tokens: list[int] = []
        ids, marks = await self._cache_plan(record, ids)
        prepared = await client.prepare(
            self._requests(record, ids, order, tokens, marks), metadata=self._metadata(record)
        )
        if prepared.requests == 0:
            return await self._nothing_to_send(record)
        await ctx.store.batches.record_lines(record.tag, record.id, order)
        moved = await ctx.store.batches.advance(
            record.tag, record.id, expected="building", state="uploaded", file_id=prepared.ref, lines=prepared.requests,
            tokens=sum(tokens),
        )  # fmt: skip
        if moved:
            await ctx.checkpoint("after_upload")
        else:
            await client.cleanup(prepared.ref)
        return moved

    async def _within_input_limit(self, record: BatchRecord, ids: list[str]) -> list[str]:
        """The jobs that fit the provider's limit on inputs across a batch (OpenAI: 50,000 embedding inputs), in
        order; the rest move at once into a new batch of their own (which is limited the same way when built)."""
        endpoint = endpoint_of(record.group)
        limit = batch_input_limit(self.ctx.runtime.config.deployment(record.group), endpoint)
        if limit is None:
            return ids
        kept: list[str] = []
        total = 0
        async for chunk in self.ctx.store.batches.bodies(record.id, ids):
            for job_id, raw in chunk:
                total += batch_inputs(orjson.loads(raw), endpoint)
                if total > limit and kept:
                    break
                kept.append(job_id)
            if total > limit and kept:
                break
        taken = set(kept)
        rest = [job_id for job_id in ids if job_id not in taken]
        if rest:
            moved = await self.ctx.store.batches.split_off(record.tag, record.group, record.id, rest)
            log.info(
                "batch split at the provider's input limit",
                extra={"batch": record.id, "new_batch": moved, "jobs": len(rest), "limit": limit},
            )
        return kept

    async def _nothing_to_send(self, record: BatchRecord) -> bool:
        log.info("batch has nothing left to send", extra={"batch": record.id, "group": record.group})
        await self.ctx.store.batches.close(record.tag, record.id, retention=60)
        return False

    async def _requests(
        self, record: BatchRecord, ids: list[str], order: list[str], tokens: list[int], marks: CacheMarks | None
    ) -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
        """The `(job id, request body)` pairs of the jobs the batch still owns, read in chunks; each id is appended
        to `order` as it is handed out (line n of the input is `order[n - 1]`), its line's estimated tokens to
        `tokens`; a body whose prompt prefix is shared is marked for the provider's cache (`marks`)."""
        async for chunk in self.ctx.store.batches.bodies(record.id, ids):
            for job_id, raw in chunk:
                order.append(job_id)
                tokens.append(line_tokens(raw))
                body = orjson.loads(raw)
                yield job_id, marks.apply(job_id, body) if marks is not None else body

    async def _cache_plan(self, record: BatchRecord, ids: list[str]) -> tuple[list[str], CacheMarks | None]:
        """The batch's lines ordered with shared prompt prefixes adjacent, and the prefixes to mark
        (proxy/prompt_cache.py); a shared prefix too short to cache is counted."""
        deployment = self.ctx.runtime.config.deployment(record.group)
        if deployment is None or endpoint_of(record.group) is not Endpoint.CHAT_COMPLETIONS:
            return ids, None
        provider, _, upstream = deployment.litellm_params.model.partition("/")
        minimum = prompt_cache.minimum_tokens(provider, upstream)
        if minimum is None:
            return ids, None
        prefixes: dict[str, prompt_cache.Prefix | None] = {}
        async for chunk in self.ctx.store.batches.bodies(record.id, ids):
            for job_id, raw in chunk:
                prefixes[job_id] = prompt_cache.prefix_of(orjson.loads(raw))
        plan = prompt_cache.plan([(job_id, prefixes.get(job_id)) for job_id in ids], minimum)
        if plan.too_short:
            self.ctx.runtime.metrics.record_prefix_too_short(model=record.group, lines=plan.too_short)
            log.info(
                "shared prompt prefix below the provider's minimum cacheable size: not marked for caching",
                extra={"batch": record.id, "group": record.group, "lines": plan.too_short, "minimum": minimum},
            )
        return plan.order, CacheMarks(provider, prefixes, plan.marked)

    @staticmethod
    def _metadata(record: BatchRecord) -> dict[str, str]:
        return {BATCH_METADATA_KEY: record.id, GROUP_METADATA_KEY: record.tag}

    async def _create(self, record: BatchRecord, client: BatchClient, *, recovering: bool) -> bool:
        ctx = self.ctx
        assert record.file_id is not None
        metadata = self._metadata(record)
        info = None
        if recovering:
            found = await client.find_batches(metadata, since=record.created_at, prepared=record.file_id)
            found = [batch for batch in found if not refused_for_capacity(batch)]  # refused ones: create again
            info = found[0] if found else None
            if info is not None:
                log.info("found the provider batch of a crashed submission", extra={"batch": record.id})
        if info is None:
            await ctx.checkpoint("before_create")
            try:
                info = await client.create(record.file_id, metadata=metadata)
            except ProviderError as exc:
                if exc.classification not in (ErrorClass.NOT_FOUND, ErrorClass.BAD_REQUEST):
                    raise
                # the prepared input is gone (another host staged it) or refused as it stands: prepare it again,
                # at once when it is gone, after the usual wait when refused
                await client.cleanup(record.file_id)
                await ctx.store.batches.advance(record.tag, record.id, expected="uploaded", state="building")
                if exc.classification is ErrorClass.BAD_REQUEST:
                    raise
                log.info("prepared input gone; preparing it again", extra={"batch": record.id})
                await ctx.store.batches.schedule(record.tag, record.id, at=ctx.clock())
                return False
            await ctx.checkpoint("after_create")
        now = ctx.clock()
        moved = await ctx.store.batches.advance(
            record.tag,
            record.id,
            expected="uploaded",
            state="submitted",
            provider_batch_id=info.batch_id,
            submitted_at=now,
            poll_interval=ctx.worker_config.poll_interval_min,
        )
        if moved:
            await self.accounts.submitted(record.group)
            log.info(
                "batch submitted",
                extra={"batch": record.id, "group": record.group, "provider_batch": info.batch_id,
                       "jobs": record.jobs},
            )  # fmt: skip
            ctx.events.batch_submitted(
                group=record.group,
                batch_id=record.id,
                provider_batch_id=info.batch_id,
                jobs=record.jobs,
                size=record.size,
            )
        return moved

    async def mark_submitted(self, tag: str, batch_id: str, job_ids: list[str] | None = None) -> None:
        """Jobs of a submitted batch show `submitted`; then the batch is polled."""
        ctx = self.ctx
        ids = job_ids if job_ids is not None else await ctx.store.batches.job_ids(tag, batch_id)
        record = await ctx.store.batches.get(tag, batch_id)
        eta = None
        if record is not None and record.submitted_at is not None:
            started = record.submitted_at
            forecast = ctx.turnarounds.eta(record.group, start=started, jobs=len(ids))
            eta = (forecast.eta, forecast.eta_p90)
        await ctx.store.batches.mark_submitted(tag, batch_id, ids, eta=eta)
        await ctx.store.batches.schedule(tag, batch_id, at=ctx.clock() + ctx.worker_config.poll_interval_min)
