"""The live queues, read from Redis: what waits per queue group, and where each open provider batch stands.

Used by the worker (`QueueWatch`, which refreshes the metrics' `QueueSnapshot` every few seconds) and by the
status report (`GET /v1/status`, `batchgate status`). Reads only: one pipelined round trip per group for the
queues, one per group for its open batches (each group's keys share one Redis Cluster slot).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from proxy.metrics import Metrics, QueueSnapshot, QueueStats
from proxy.settings import Config
from proxy.store import keys
from proxy.store.records import decoded

OLDEST_SAMPLE = 20  # the pending ZSET is scored by flush time: the oldest job is sought among the most urgent
MAX_BATCHES_SHOWN = 50
REFRESH_SECONDS = 2.0
BATCH_FIELDS = ("state", "provider_state", "created_at", "submitted_at", "jobs", "total", "done", "provider_batch_id")


@dataclass(frozen=True, slots=True)
class OpenBatch:
    """One of our provider batches not yet ingested."""

    id: str
    group: str
    state: str  # submitting (not yet created upstream) or the provider's state
    provider_batch_id: str | None
    created_at: float
    jobs: int
    total: int
    done: int

    @property
    def progress(self) -> float | None:
        return self.done / self.total if self.total else None

    def to_json(self, now: float, *, with_ids: bool) -> dict[str, Any]:
        return {
            "id": self.id if with_ids else None,
            "provider_batch_id": self.provider_batch_id if with_ids else None,
            "model": self.group,
            "state": self.state,
            "jobs": self.jobs,
            "total": self.total,
            "done": self.done,
            "progress_percent": None if self.progress is None else round(self.progress * 100, 1),
            "age_seconds": round(max(now - self.created_at, 0.0), 1),
        }


@dataclass(frozen=True, slots=True)
class QueueView:
    """One queue group (a configured model): jobs waiting for a batch, jobs for the sync lane, open batches."""

    group: str
    waiting: int
    waiting_bytes: int
    oldest_enqueued_at: float | None
    next_flush_at: float | None
    sync_waiting: int
    sync_running: int
    batches: tuple[OpenBatch, ...] = field(default_factory=tuple)

    def batches_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for batch in self.batches:
            counts[batch.state] = counts.get(batch.state, 0) + 1
        return counts

    @property
    def oldest_open_batch_created_at(self) -> float | None:
        return min((batch.created_at for batch in self.batches), default=None)

    def to_json(self, now: float, *, with_ids: bool) -> dict[str, Any]:
        return {
            "model": self.group,
            "waiting": self.waiting,
            "waiting_bytes": self.waiting_bytes,
            "oldest_age_seconds": None if self.oldest_enqueued_at is None else round(now - self.oldest_enqueued_at, 1),
            "next_flush_in_seconds": None if self.next_flush_at is None else round(self.next_flush_at - now, 1),
            "sync_waiting": self.sync_waiting,
            "sync_running": self.sync_running,
            "open_batches": self.batches_by_state(),
            "batches": [batch.to_json(now, with_ids=with_ids) for batch in self.batches[:MAX_BATCHES_SHOWN]],
        }


async def groups_of(client: redis.asyncio.Redis) -> dict[str, str]:
    """tag -> group name of every queue group ever used."""
    raw = await client.hgetall(keys.groups())
    return {decoded(tag): decoded(name) for tag, name in raw.items()}


async def read_queues(client: redis.asyncio.Redis, groups: Mapping[str, str] | None = None) -> list[QueueView]:
    """Every group's queues and open batches, ordered by group name."""
    groups = await groups_of(client) if groups is None else groups
    views = [await read_queue(client, tag, group) for tag, group in groups.items()]
    return sorted(views, key=lambda view: view.group)


async def read_queue(client: redis.asyncio.Redis, tag: str, group: str) -> QueueView:
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.pending(tag))
    pipe.get(keys.pending_bytes(tag))
    pipe.zrange(keys.pending(tag), 0, OLDEST_SAMPLE - 1, withscores=True)
    pipe.zcard(keys.sync_queue(tag))
    pipe.zcard(keys.sync_inflight(tag))
    pipe.zrange(keys.open_batches(tag), 0, -1)
    waiting, size, urgent, sync_waiting, sync_running, open_ids = await pipe.execute()
    sampled = [decoded(member) for member, _ in urgent]
    pipe = client.pipeline(transaction=False)
    for job_id in sampled:
        pipe.hget(keys.job(job_id), "created_at")
    batch_ids = [decoded(raw) for raw in open_ids]
    for batch_id in batch_ids:
        pipe.hmget(keys.batch(tag, batch_id), *BATCH_FIELDS)
    replies = await pipe.execute() if sampled or batch_ids else []
    created = [float(raw) for raw in replies[: len(sampled)] if raw]
    batches = [
        batch
        for batch_id, raw in zip(batch_ids, replies[len(sampled) :], strict=True)
        if (batch := _open_batch(batch_id, group, raw)) is not None
    ]
    return QueueView(
        group=group,
        waiting=int(waiting),
        waiting_bytes=int(size or 0),
        oldest_enqueued_at=min(created, default=None),
        next_flush_at=float(urgent[0][1]) if urgent else None,
        sync_waiting=int(sync_waiting),
        sync_running=int(sync_running),
        batches=tuple(sorted(batches, key=lambda batch: batch.created_at)),
    )


def _open_batch(batch_id: str, group: str, raw: list[Any]) -> OpenBatch | None:
    stage, provider_state, created_at, submitted_at, jobs, total, done, provider_id = (
        decoded(value) if value is not None else "" for value in raw
    )
    if not stage or stage == "ended":
        return None
    state = "submitting" if stage in ("building", "uploaded") else provider_state or "validating"
    return OpenBatch(
        id=batch_id,
        group=group,
        state=state,
        provider_batch_id=provider_id or None,
        created_at=float(submitted_at or created_at or 0),
        jobs=int(jobs or 0),
        total=int(total or 0),
        done=int(done or 0),
    )


def snapshot_of(views: list[QueueView], config: Config | None, taken_at: float) -> QueueSnapshot:
    """The metrics' view of the queues (gauges rendered by `proxy.metrics.QueueCollector`)."""
    return QueueSnapshot(
        taken_at=taken_at,
        queues=tuple(
            QueueStats(
                queue=view.group,
                depth=view.waiting,
                oldest_enqueued_at=view.oldest_enqueued_at,
                batches_by_state=view.batches_by_state(),
                oldest_open_batch_created_at=view.oldest_open_batch_created_at,
                turnaround_estimate_seconds=(
                    config.batch_knobs(view.group).turnaround_estimate if config is not None else None
                ),
            )
            for view in views
        ),
    )


class QueueWatch:
    """Refreshes the queue gauges from Redis at most every `interval` seconds (called on each worker tick).

    Only workers publish these gauges (an API process without a worker has no snapshot and exposes none);
    several workers report the same values, so dashboards and alerts aggregate them with max().
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        metrics: Metrics,
        config: Callable[[], Config],
        *,
        interval: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._config = config
        self._interval = interval
        self._clock = clock
        self._next = 0.0

    async def refresh(self, groups: Mapping[str, str], *, force: bool = False) -> bool:
        now = self._clock()
        if not force and now < self._next:
            return False
        self._next = now + self._interval
        views = await read_queues(self._client, groups)
        self._metrics.update_queues(snapshot_of(views, self._config(), time.time()))
        return True
