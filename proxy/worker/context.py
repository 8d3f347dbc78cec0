"""What every worker task shares: the process's services, the store, leases, the observer, one clock, fault
injection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from proxy.events import WorkerEvents
from proxy.jobs.turnaround_book import TurnaroundBook, has_flex
from proxy.metrics import Metrics
from proxy.pricing import PriceBook
from proxy.providers.base import BatchClient, CompletionClient
from proxy.settings import BatchKnobs, Config, WorkerConfig
from proxy.store.store import Store
from proxy.worker.leases import Leases

log = logging.getLogger("batchgate.worker")

T = TypeVar("T")

# Fault injection for the crash tests: the worker stops (sleeps) at the named stage, after writing the stage
# name to the marker file, so a test can kill -9 it exactly there (or, in process, set `resume`). Stages:
# before_upload, after_upload, before_create, after_create, while_polling, during_ingest.
PAUSE_AT_ENV = "BATCHGATE_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "BATCHGATE_TEST_PAUSE_MARKER"


class WorkerServices(Protocol):
    """What the worker takes from its process: the Runtime (proxy/runtime.py) satisfies this, but the worker
    never imports it (the Runtime is built above the worker)."""

    @property
    def config(self) -> Config:
        """The live config (swapped whole on reload)."""

    @property
    def store(self) -> Store: ...
    @property
    def events(self) -> WorkerEvents: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def prices(self) -> PriceBook:
        """The live price book (swapped with the config)."""

    def batch_client(self, model_name: str) -> BatchClient: ...
    def completion_client(self, model_name: str) -> CompletionClient: ...


@dataclass
class WorkerContext:
    runtime: WorkerServices
    store: Store
    leases: Leases
    events: WorkerEvents
    worker_id: str
    turnarounds: TurnaroundBook
    clock: Callable[[], float] = time.time
    pause_at: str | None = None
    pause_marker: Path | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # set on SIGTERM: take no new work
    resume: asyncio.Event = field(default_factory=asyncio.Event)  # ends a fault-injection pause (in-process tests)
    _paused: set[str] = field(default_factory=set)

    @property
    def worker_config(self) -> WorkerConfig:
        return self.runtime.config.worker

    def knobs(self, group: str) -> BatchKnobs:
        return self.runtime.config.batch_knobs(group)

    def turnaround(self, group: str) -> float:
        """Seconds a batch of `group` started now needs at the configured confidence (learned, else estimated)."""
        return self.turnarounds.need(group)

    def supports_flex(self, group: str) -> bool:
        return has_flex(self.runtime.config, group)

    async def checkpoint(self, stage: str) -> None:
        """A named stage of a submission or ingest, just before or after a provider call: the task makes sure its
        leases are still its own (CancelledError if one is lost), and the crash tests may pause it here (see
        PAUSE_AT_ENV)."""
        if self.pause_at == stage and stage not in self._paused:
            self._paused.add(stage)
            log.warning("pausing for fault injection", extra={"stage": stage, "worker": self.worker_id})
            if self.pause_marker is not None:
                self.pause_marker.write_text(stage)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.resume.wait(), timeout=3600)
        await self.leases.confirm()


async def shielded(write: Awaitable[T]) -> T:
    """Await a final write to its end even if the caller is cancelled meanwhile (a lost lease, a hand-back):
    the write and what follows it in `write` complete, then the cancellation goes on."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def pause_from_environment() -> tuple[str | None, Path | None]:
    marker = os.environ.get(PAUSE_MARKER_ENV)
    return os.environ.get(PAUSE_AT_ENV) or None, Path(marker) if marker else None
