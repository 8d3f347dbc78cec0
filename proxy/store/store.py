"""The store: one object bundling every part of the Redis schema. Nothing outside proxy/store/ names a key."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio

from proxy.store.accounts import AccountProblems
from proxy.store.batches import BatchStore
from proxy.store.budgets import BudgetStore
from proxy.store.deliveries import Deliveries
from proxy.store.holds import HoldOutcomes
from proxy.store.jobs import JobStore
from proxy.store.leases import LeaseStore
from proxy.store.ledger import LedgerStore
from proxy.store.outcomes import Outcomes
from proxy.store.scripts import Scripts
from proxy.store.shadow_calls import ShadowCalls
from proxy.store.snapshots import QueueSnapshots
from proxy.store.turnarounds import TurnaroundStore


@dataclass(frozen=True, slots=True)
class Store:
    client: redis.asyncio.Redis
    scripts: Scripts
    jobs: JobStore
    batches: BatchStore
    outcomes: Outcomes
    deliveries: Deliveries
    ledger: LedgerStore
    snapshots: QueueSnapshots
    leases: LeaseStore
    holds: HoldOutcomes
    accounts: AccountProblems
    turnarounds: TurnaroundStore
    clock: Callable[[], float]
    budgets: BudgetStore
    shadow_calls: ShadowCalls

    @classmethod
    def create(cls, client: redis.asyncio.Redis, *, clock: Callable[[], float] = time.time) -> Store:
        scripts = Scripts.register(client)
        return cls(
            client=client,
            scripts=scripts,
            jobs=JobStore(client, scripts, clock=clock),
            batches=BatchStore(client, scripts, clock=clock),
            outcomes=Outcomes(client, scripts, clock=clock),
            deliveries=Deliveries(client, scripts, clock=clock),
            ledger=LedgerStore(client, scripts),
            snapshots=QueueSnapshots(client),
            leases=LeaseStore(client, scripts),
            holds=HoldOutcomes(client),
            accounts=AccountProblems(client, scripts, clock=clock),
            turnarounds=TurnaroundStore(client, scripts, clock=clock),
            clock=clock,
            budgets=BudgetStore(client),
            shadow_calls=ShadowCalls(client),
        )
