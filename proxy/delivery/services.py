"""What delivery takes from its process. The Runtime (proxy/runtime.py) satisfies both protocols, but delivery
never imports it: the Runtime is built above delivery (it holds the JobWaiters)."""

from __future__ import annotations

from typing import Protocol

import redis.asyncio

from proxy.delivery.waiting import JobWaiters
from proxy.events import WorkerEvents
from proxy.jobs.turnaround_book import TurnaroundBook
from proxy.metrics import Metrics
from proxy.settings import Config
from proxy.store.store import Store


class WebhookServices(Protocol):
    """What the webhook sender needs (the worker passes its own services)."""

    @property
    def config(self) -> Config:
        """The live config; read it once per call (it is swapped whole on reload)."""

    @property
    def metrics(self) -> Metrics: ...
    @property
    def events(self) -> WorkerEvents: ...


class DeliveryServices(WebhookServices, Protocol):
    """What answering a deferred call at the door needs."""

    @property
    def redis(self) -> redis.asyncio.Redis: ...
    @property
    def store(self) -> Store: ...
    @property
    def waiters(self) -> JobWaiters: ...
    @property
    def turnarounds(self) -> TurnaroundBook | None:
        """The learned batch turnarounds (a job's flush time and ETA); None: the configured estimates."""
