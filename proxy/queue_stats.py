"""The live queues, as the store reads them (`store/snapshots.py`): what waits per queue group, and where each open
provider batch stands.

Used by the worker (`QueueWatch`, which refreshes the metrics' `QueueSnapshot` every few seconds) and by the
status report (`GET /v1/status`, `batchgate status`). This module turns the store's reads into views and gauges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.jobs.turnaround_book import REPORTED_QUANTILES, load_turnarounds
from proxy.metrics import Metrics, QueueSnapshot, QueueStats
from proxy.settings import Config
from proxy.store.records import BatchRecord
from proxy.store.store import Store

MAX_BATCHES_SHOWN = 50
REFRESH_SECONDS = 2.0


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
            "total": self.total or None,  # None: the provider does not say (no progress information)
            "done": self.done if self.total else None,
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


async def read_queues(store: Store, groups: Mapping[str, str] | None = None) -> list[QueueView]:
    """Every group's queues and open batches, ordered by group name."""
    groups = await store.batches.groups() if groups is None else groups
    views = [await read_queue(store, tag, group) for tag, group in groups.items()]
    return sorted(views, key=lambda view: view.group)


async def read_queue(store: Store, tag: str, group: str) -> QueueView:
    read = await store.snapshots.read(tag)
    batches = [open_batch(record, group) for record in read.open_batches]
    return QueueView(
        group=group,
        waiting=read.waiting,
        waiting_bytes=read.waiting_bytes,
        oldest_enqueued_at=read.oldest_enqueued_at,
        next_flush_at=read.next_flush_at,
        sync_waiting=read.sync_waiting,
        sync_running=read.sync_running,
        batches=tuple(sorted(batches, key=lambda batch: batch.created_at)),
    )


def open_batch(record: BatchRecord, group: str) -> OpenBatch:
    """How the status report and the gauges show a batch not yet ended."""
    stage = record.state
    state = "submitting" if stage in ("building", "uploaded") else record.provider_state or "validating"
    return OpenBatch(
        id=record.id,
        group=group,
        state=state,
        provider_batch_id=record.provider_batch_id,
        created_at=record.submitted_at or record.created_at,
        jobs=record.jobs,
        total=record.total,
        done=record.done,
    )


def snapshot_of(
    views: list[QueueView],
    config: Config | None,
    taken_at: float,
    turnarounds: Mapping[str, Mapping[tuple[str, str], float]] | None = None,
) -> QueueSnapshot:
    """The metrics' view of the queues (gauges rendered by `proxy.metrics.QueueCollector`); `turnarounds`: each
    group's learned turnaround quantiles, (band, quantile) -> seconds."""
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
                turnaround_quantiles=(turnarounds or {}).get(view.group, {}),
            )
            for view in views
        ),
    )


async def learned_quantiles(store: Store, config: Config, group: str) -> dict[tuple[str, str], float]:
    """(band, quantile) -> seconds of every band of `group` whose turnaround is learned."""
    bands = await load_turnarounds(store, config, group)
    return {
        (band, str(q)): dist.quantile(q) for band, dist in bands.items() if dist.learned for q in REPORTED_QUANTILES
    }


class QueueWatch:
    """Refreshes the queue gauges from Redis at most every `interval` seconds (called on each worker tick).

    Only workers publish these gauges (an API process without a worker has no snapshot and exposes none);
    several workers report the same values, so dashboards and alerts aggregate them with max().
    """

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        config: Callable[[], Config],
        *,
        interval: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
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
        views = await read_queues(self._store, groups)
        config = self._config()
        turnarounds = {view.group: await learned_quantiles(self._store, config, view.group) for view in views}
        self._metrics.update_queues(snapshot_of(views, config, time.time(), turnarounds))
        problems = await self._store.accounts.all()
        self._metrics.set_account_problems((problem.group, problem.code) for problem in problems)
        return True
