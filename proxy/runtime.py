"""The Runtime: everything a request handler or a worker loop needs, built once per process."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio

from proxy import redis_client
from proxy.accounting import Accounting
from proxy.auth import KeyRing
from proxy.budgets import Budgets
from proxy.budgets_metrics import BudgetGauges
from proxy.config_scope import RestartRequired, static_difference
from proxy.delivery.waiting import JobWaiters
from proxy.events import NullEvents, WorkerEvents
from proxy.jobs.turnaround_book import TurnaroundBook
from proxy.logs import mask_secrets_in_logs
from proxy.metrics import Metrics, known_labels
from proxy.pricing import PriceBook
from proxy.providers.base import BatchClient, CompletionClient
from proxy.providers.registry import ProviderRegistry, is_simulated
from proxy.settings import DEV_MASTER_KEY, Config, Settings
from proxy.store.store import Store
from proxy.telemetry import Telemetry

logger = logging.getLogger("batchgate")


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """The config in force with what is derived from its live part. Swapped whole on reload: a request reads
    `runtime.live` once and uses that snapshot from start to end."""

    config: Config
    keys: KeyRing
    prices: PriceBook

    @classmethod
    def of(cls, config: Config, *, fallback_master_key: str | None) -> ConfigSnapshot:
        return cls(config, KeyRing(config, fallback_master_key=fallback_master_key), PriceBook.from_config(config))


@dataclass
class Runtime:
    """Process-wide state, passed explicitly. `live` (config, caller keys, prices) is swapped whole on reload;
    the static part of the config (models, providers, limits, worker) stays as it was at start."""

    settings: Settings
    live: ConfigSnapshot
    redis: redis.asyncio.Redis
    providers: ProviderRegistry
    store: Store
    metrics: Metrics
    accounting: Accounting
    events: WorkerEvents
    waiters: JobWaiters
    simulated: bool = False
    fallback_master_key: str | None = None
    started_at: float = 0.0
    turnarounds: TurnaroundBook | None = None  # the learned batch turnarounds, cached (set by build_runtime)
    budgets: Budgets | None = None  # spending budgets (proxy/budgets.py; set by build_runtime)
    budget_gauges: BudgetGauges | None = None

    def completion_client(self, model_name: str) -> CompletionClient:
        return self.providers.completion(model_name)

    def batch_client(self, model_name: str) -> BatchClient:
        return self.providers.batch(model_name)

    @property
    def config(self) -> Config:
        """The config in force. Within one request, read `live` once instead (a reload may swap it meanwhile)."""
        return self.live.config

    @property
    def keys(self) -> KeyRing:
        return self.live.keys

    @property
    def prices(self) -> PriceBook:
        return self.live.prices

    def apply_config(self, config: Config) -> None:
        """Swap in a newly validated config: policy, caller keys, price overrides and delivery apply to the next
        request. Raises RestartRequired (naming the keys) when its static part differs; the old config stays."""
        differences = static_difference(self.live.config, config)
        if differences:
            raise RestartRequired(differences)
        live = ConfigSnapshot.of(config, fallback_master_key=self.fallback_master_key)
        self.metrics.set_known(**known_labels(config))
        self.live = live
        mask_secrets_in_logs(secrets_to_mask(config, self.fallback_master_key))


def connect_redis(url: str, *, idle_timeout: float = redis_client.DEFAULT_IDLE_TIMEOUT) -> redis.asyncio.Redis:
    """The client for `url` (a single server, or a Redis Cluster for `redis+cluster://`): see redis_client.py."""
    return redis_client.connect_redis(url, idle_timeout=idle_timeout)


def build_runtime(settings: Settings, config: Config, *, events: WorkerEvents | None = None) -> Runtime:
    """Everything one process needs. Call inside a running event loop (the HTTP session binds to it)."""
    if not settings.redis_url:
        raise ValueError("settings.redis_url is required (the CLI starts an embedded Redis when none is set)")
    every_model_simulated = all(is_simulated(deployment) for deployment in config.model_list)
    simulated = bool(settings.simulator_url) and any(is_simulated(d) for d in config.model_list)
    fallback_key = DEV_MASTER_KEY if simulated and every_model_simulated else None
    client = connect_redis(settings.redis_url, idle_timeout=config.limits.redis_idle_timeout)
    store = Store.create(client)
    metrics = Metrics(None, **known_labels(config))
    runtime = Runtime(
        settings=settings,
        live=ConfigSnapshot.of(config, fallback_master_key=fallback_key),
        redis=client,
        providers=ProviderRegistry(config, simulator_url=settings.simulator_url),
        store=store,
        waiters=JobWaiters(client, store.jobs),
        metrics=metrics,
        accounting=Accounting(store.ledger),
        events=NullEvents(),
        simulated=simulated,
        fallback_master_key=fallback_key,
        started_at=time.time(),
    )
    runtime.turnarounds = TurnaroundBook(store, lambda: runtime.config)
    runtime.budgets = Budgets(store.budgets, lambda: runtime.config)
    runtime.budget_gauges = BudgetGauges(metrics.registry)
    kept = store.shadow_calls
    runtime.events = events or Telemetry(
        metrics, runtime.accounting, prices=lambda: runtime.prices, budgets=runtime.budgets, shadow_calls=kept
    )
    mask_secrets_in_logs(secrets_to_mask(config, fallback_key))
    if fallback_key and config.auth.master_key is None:
        logger.warning("no master key is set and every model is simulated: the development key from the README works")
    if runtime.keys.empty:
        logger.warning("no caller keys are configured: every request will be refused with 401")
    return runtime


def secrets_to_mask(config: Config, fallback_master_key: str | None) -> list[str]:
    """The values every log line of this process must mask (logs.mask_secrets_in_logs)."""
    return [*config.secret_values(), *([fallback_master_key] if fallback_master_key else [])]


async def close_runtime(runtime: Runtime) -> None:
    if isinstance(runtime.events, Telemetry):
        await runtime.events.aclose()  # the ledger records still buffered
    await runtime.providers.aclose()
    await runtime.redis.aclose()
