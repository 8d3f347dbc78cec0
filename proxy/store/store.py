"""The job store: one object bundling the caller's side, the worker's side and the batch records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio

from proxy.store.batches import BatchStore
from proxy.store.jobs import JobStore
from proxy.store.outcomes import Outcomes
from proxy.store.scripts import Scripts


@dataclass(frozen=True, slots=True)
class Store:
    client: redis.asyncio.Redis
    scripts: Scripts
    jobs: JobStore
    batches: BatchStore
    outcomes: Outcomes
    clock: Callable[[], float]

    @classmethod
    def create(cls, client: redis.asyncio.Redis, *, clock: Callable[[], float] = time.time) -> Store:
        scripts = Scripts.register(client)
        return cls(
            client=client,
            scripts=scripts,
            jobs=JobStore(client, scripts, clock=clock),
            batches=BatchStore(client, scripts, clock=clock),
            outcomes=Outcomes(client, scripts, clock=clock),
            clock=clock,
        )
