"""Queue -> provider batch: flush a group's queue when it is full, old enough or short of deadline slack.

A batch record moves building -> uploaded -> submitted, each step recorded before the next begins, so a
worker that dies anywhere leaves enough behind for the next one (`send(..., recovering=True)`): a building
batch is rebuilt from its job set and uploaded; an uploaded one is looked up upstream by its metadata and
created only if it is not there. Jobs never leave the batch's job set until they are answered or re-queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path

import httpx
import orjson
import redis

from proxy.providers.base import BatchClient
from proxy.providers.openai_batch import BatchApiError
from proxy.store import keys
from proxy.store.records import BatchRecord
from proxy.worker.context import WorkerContext

log = logging.getLogger("batchgate.worker.submitter")

BATCH_METADATA_KEY = "batchgate_batch"
GROUP_METADATA_KEY = "batchgate_group"
CHAT_URL = "/v1/chat/completions"
RETRY_LATER = 5.0


class Submitter:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

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
                batch_id = await ctx.store.batches.open_batch(tag, group, look_again_in=ctx.worker_config.lease)
                async with ctx.leases.held(keys.lease(tag, f"batch:{batch_id}")) as mine:
                    if not mine:  # cannot happen for a fresh id; keep the record for recovery
                        break
                    try:
                        ids = await ctx.store.batches.claim_jobs(
                            tag, batch_id, limit=knobs.max_requests, byte_budget=knobs.max_bytes
                        )
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
        if stats.count == 0:
            return False
        knobs = self.ctx.knobs(group)
        now = self.ctx.clock()
        return (
            drain
            or stats.count >= knobs.max_requests
            or stats.bytes >= knobs.max_bytes
            or (stats.next_due is not None and stats.next_due <= now)
        )

    async def send(self, record: BatchRecord, *, recovering: bool = False, job_ids: list[str] | None = None) -> None:
        """Take a batch from wherever it stands to `submitted`; the caller holds the batch's lease."""
        ctx = self.ctx
        client = ctx.runtime.batch_client(record.group)
        try:
            if record.state == "building":
                if not await self._upload(record, client, job_ids):
                    return
                recovering = False
            refreshed = await ctx.store.batches.get(record.tag, record.id)
            if refreshed is None or refreshed.state != "uploaded" or refreshed.file_id is None:
                return
            if not await self._create(refreshed, client, recovering=recovering):
                return
        except (BatchApiError, httpx.HTTPError, OSError) as exc:
            log.warning(
                "batch submission failed; will retry: %r", exc, extra={"batch": record.id, "group": record.group}
            )
            await ctx.store.batches.schedule(record.tag, record.id, at=ctx.clock() + RETRY_LATER)
            return
        await self.mark_submitted(record.tag, record.id, job_ids)

    async def _upload(self, record: BatchRecord, client: BatchClient, job_ids: list[str] | None) -> bool:
        ctx = self.ctx
        ids = job_ids if job_ids is not None else await ctx.store.batches.job_ids(record.tag, record.id)
        path, count = await self._write_jsonl(record, ids)
        try:
            if count == 0:
                log.info("batch has nothing left to send", extra={"batch": record.id, "group": record.group})
                await ctx.store.batches.close(record.tag, record.id, retention=60)
                return False
            await ctx.checkpoint("before_upload")
            file_id = await client.upload_file(path, filename=f"{record.id}.jsonl")
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        moved = await ctx.store.batches.advance(
            record.tag, record.id, expected="building", state="uploaded", file_id=file_id, lines=count
        )
        if moved:
            await ctx.checkpoint("after_upload")
        return moved

    async def _write_jsonl(self, record: BatchRecord, ids: list[str]) -> tuple[Path, int]:
        """Stream the batch's request lines to a temporary file (never the whole batch in memory)."""
        model = self.ctx.upstream_model(record.group)
        handle, name = tempfile.mkstemp(prefix=f"{record.id}-", suffix=".jsonl")
        count = 0
        with os.fdopen(handle, "wb") as out:
            async for chunk in self.ctx.store.batches.bodies(record.id, ids):
                for job_id, raw in chunk:
                    body = orjson.loads(raw)
                    body["model"] = model
                    body.pop("stream", None)
                    body.pop("stream_options", None)
                    line = {"custom_id": job_id, "method": "POST", "url": CHAT_URL, "body": body}
                    out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
                    count += 1
        return Path(name), count

    async def _create(self, record: BatchRecord, client: BatchClient, *, recovering: bool) -> bool:
        ctx = self.ctx
        info = None
        if recovering:
            found = await client.find_batches(metadata_key=BATCH_METADATA_KEY, metadata_value=record.id)
            info = found[0] if found else None
            if info is not None:
                log.info("found the provider batch of a crashed submission", extra={"batch": record.id})
        if info is None:
            assert record.file_id is not None
            await ctx.checkpoint("before_create")
            try:
                info = await client.create_batch(
                    record.file_id, metadata={BATCH_METADATA_KEY: record.id, GROUP_METADATA_KEY: record.tag}
                )
            except BatchApiError as exc:
                if exc.status in (400, 404):  # the uploaded file is gone: build and upload again
                    await ctx.store.batches.advance(record.tag, record.id, expected="uploaded", state="building")
                    await ctx.store.batches.schedule(record.tag, record.id, at=ctx.clock())
                raise
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
        await ctx.store.batches.mark_submitted(tag, batch_id, ids)
        await ctx.store.batches.schedule(tag, batch_id, at=ctx.clock() + ctx.worker_config.poll_interval_min)
