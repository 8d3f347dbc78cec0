"""Open batches -> results: poll each with backoff, one worker per batch at a time (its lease).

A batch is looked at when its score in the group's open-batches ZSET comes due: a submitted batch is polled
(the interval grows from poll_interval_min to poll_interval_max), an ended one ingested and closed, and one a
dead worker left in `building`/`uploaded` is carried on by the submitter's recovery path.
"""

from __future__ import annotations

import contextlib
import logging

from proxy.providers.base import BatchInfo, BatchState, ErrorClass, ProviderError
from proxy.store import keys
from proxy.store.records import BatchRecord
from proxy.worker.context import WorkerContext
from proxy.worker.ingest import Ingester
from proxy.worker.reconcile import reconcile
from proxy.worker.stalls import handle_stall
from proxy.worker.submitter import Submitter

log = logging.getLogger("batchgate.worker.poller")

BACKOFF = 1.5
# the ends a batch's turnaround is learned from: finished, or given up by the provider (its window is its tail);
# a batch we cancelled says nothing of how long it would have taken
LEARNED_FROM = frozenset({BatchState.COMPLETED, BatchState.EXPIRED})


class Poller:
    def __init__(self, ctx: WorkerContext, submitter: Submitter) -> None:
        self.ctx = ctx
        self.submitter = submitter
        self.ingester = Ingester(ctx)

    async def visit(self, tag: str, batch_id: str) -> bool:
        """Look at one due batch under its lease; False when another worker holds it (or we are stopping)."""
        if self.ctx.stopping.is_set():
            return False
        async with self.ctx.leases.held(keys.lease(tag, f"batch:{batch_id}")) as mine:
            if mine:
                await self.look(tag, batch_id)
            return mine

    async def look(self, tag: str, batch_id: str) -> None:
        ctx = self.ctx
        record = await ctx.store.batches.get(tag, batch_id)
        if record is None or record.state == "ended":
            await ctx.store.batches.close(tag, batch_id, retention=60)
            return
        if record.state in ("building", "uploaded"):
            log.info("recovering a batch left unsubmitted", extra={"batch": batch_id, "state": record.state})
            await self.submitter.send(record, recovering=True)
            return
        if not record.jobs_marked:
            await self.submitter.mark_submitted(tag, batch_id)
        assert record.provider_batch_id is not None
        accounts = self.submitter.accounts
        try:
            info = await ctx.runtime.batch_client(record.group).retrieve(record.provider_batch_id)
        except ProviderError as exc:
            await self._call_failed(record, exc, where="poll")
            return
        await accounts.call_worked(record.group, where="poll")
        try:
            await ctx.checkpoint("while_polling")
            if info.state.is_terminal:
                if await self.submitter.capacity.batch_failed(record, info):
                    return
                await self._end(record, info)
                await accounts.call_worked(record.group, where="results")
            else:
                await self._wait(record, info)
        except ProviderError as exc:  # fetching the results
            await self._call_failed(record, exc, where="results")
            return
        if not info.state.is_terminal:
            await handle_stall(ctx, record, info)

    async def _call_failed(self, record: BatchRecord, exc: ProviderError, *, where: str) -> None:
        """A poll or a results download failed. An account problem (a 401/403: key revoked, scope missing; quota)
        stops submission and is reported like one on create; the batch stays open upstream and here, and its jobs
        wait (no attempt spent) until the call works again or the deadline guard answers them."""
        if exc.classification is ErrorClass.NOT_FOUND:
            await self._lost(record)
            return
        if exc.classification is ErrorClass.ACCOUNT_PROBLEM:
            await self.submitter.accounts.report_error(record.group, exc, where=where)
        await self._retry_later(record, exc)

    async def _wait(self, record: BatchRecord, info: BatchInfo) -> None:
        ctx = self.ctx
        config = ctx.worker_config
        interval = min(config.poll_interval_max, max(config.poll_interval_min, record.poll_interval * BACKOFF))
        counts = {"total": info.total, "done": info.done} if info.total and info.done is not None else {}
        await ctx.store.batches.update(
            record.tag, record.id, provider_state=info.state.value, poll_interval=interval, **counts
        )  # unknown counts leave the last known ones (none: progress unknown)
        await ctx.store.batches.schedule(record.tag, record.id, at=ctx.clock() + interval)

    async def _end(self, record: BatchRecord, info: BatchInfo) -> None:
        ctx = self.ctx
        turnaround = ctx.clock() - (record.submitted_at or record.created_at)
        tally = await self.ingester.ingest(record, info)
        await reconcile(ctx, record, info, tally.recorded)
        await ctx.store.batches.update(record.tag, record.id, provider_state=info.state.value)
        await ctx.store.batches.close(record.tag, record.id, retention=ctx.worker_config.result_ttl)
        if info.state in LEARNED_FROM and not record.cancel_requested and record.submitted_at:
            # after the close: a crash in between loses one observation rather than counting it twice
            await ctx.turnarounds.observe(record.group, jobs=record.jobs, seconds=turnaround)
        await self._cleanup(record)
        log.info(
            "batch ended",
            extra={"batch": record.id, "group": record.group, "state": info.state.value,
                   "succeeded": tally.succeeded, "retried": tally.retried, "failed": tally.failed,
                   "wasted": tally.wasted},
        )  # fmt: skip
        ctx.events.batch_ended(
            group=record.group,
            batch_id=record.id,
            state=info.state.value,
            succeeded=tally.succeeded,
            retried=tally.retried,
            failed=tally.failed,
            turnaround=turnaround,
        )

    async def _cleanup(self, record: BatchRecord) -> None:
        """The ended batch's input is no longer needed upstream; failing to drop it costs only storage."""
        if not record.file_id:
            return
        with contextlib.suppress(ProviderError):
            await self.ctx.runtime.batch_client(record.group).cleanup(record.file_id)

    async def _lost(self, record: BatchRecord) -> None:
        """The provider no longer knows the batch: every job it owed goes back through the retry rules."""
        log.warning("provider batch not found; its jobs are retried", extra={"batch": record.id})
        lost = BatchInfo(record.provider_batch_id or "", BatchState.EXPIRED, record.created_at, {})
        await self._end(record, lost)

    async def _retry_later(self, record: BatchRecord, exc: Exception) -> None:
        log.warning("polling a batch failed: %r", exc, extra={"batch": record.id})
        at = self.ctx.clock() + max(self.ctx.worker_config.poll_interval_min, record.poll_interval)
        await self.ctx.store.batches.schedule(record.tag, record.id, at=at)
