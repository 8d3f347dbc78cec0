"""Read-only snapshots of a queue group for gauges and the status report: what waits, what runs, which batches are
open. One pipelined round trip for the queues and one for the sampled jobs and open batches (one slot per group).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio

from proxy.store import keys
from proxy.store.records import BatchRecord, JobView, decoded, raw_hash

OLDEST_SAMPLE = 20  # the pending ZSET is scored by flush time: the oldest job is sought among the most urgent
SAMPLED_FIELDS = ("created_at",)


@dataclass(frozen=True, slots=True)
class QueueRead:
    """One group's queues as read at one moment. Times are epoch seconds; `open_batches` excludes ended ones."""

    waiting: int
    waiting_bytes: int
    oldest_enqueued_at: float | None  # among the OLDEST_SAMPLE most urgent waiting jobs
    next_flush_at: float | None
    sync_waiting: int
    sync_running: int
    open_batches: tuple[BatchRecord, ...]


class QueueSnapshots:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.redis = client

    async def read(self, tag: str) -> QueueRead:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.pending(tag))
        pipe.get(keys.pending_bytes(tag))
        pipe.zrange(keys.pending(tag), 0, OLDEST_SAMPLE - 1, withscores=True)
        pipe.zcard(keys.sync_queue(tag))
        pipe.zcard(keys.sync_inflight(tag))
        pipe.zrange(keys.open_batches(tag), 0, -1)
        waiting, size, urgent, sync_waiting, sync_running, open_ids = await pipe.execute()
        sampled = [decoded(member) for member, _ in urgent]
        batch_ids = [decoded(raw) for raw in open_ids]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in sampled:
            pipe.hmget(keys.job(job_id), *SAMPLED_FIELDS)
        for batch_id in batch_ids:
            pipe.hgetall(keys.batch(tag, batch_id))
        replies = await pipe.execute() if sampled or batch_ids else []
        jobs = [JobView.decode_fields(SAMPLED_FIELDS, raw) for raw in replies[: len(sampled)]]
        batches = [BatchRecord.decode(raw) for raw in map(raw_hash, replies[len(sampled) :]) if raw]
        return QueueRead(
            waiting=int(waiting),
            waiting_bytes=int(size or 0),
            oldest_enqueued_at=min((job.created_at for job in jobs if job is not None), default=None),
            next_flush_at=float(urgent[0][1]) if urgent else None,
            sync_waiting=int(sync_waiting),
            sync_running=int(sync_running),
            open_batches=tuple(batch for batch in batches if batch.state != "ended"),
        )
