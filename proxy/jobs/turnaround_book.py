"""A process's view of the learned turnarounds: read from the store, kept for a few seconds, and the numbers the
decisions use (the turnaround a batch needs at the configured confidence, a job's ETA, a stall)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.endpoints import Endpoint, endpoint_of
from proxy.jobs.turnaround import ALL, BANDS, TOP_BAND, Turnaround, band_of, break_even, bucket_of
from proxy.pricing import batch_discount_of
from proxy.settings import Config
from proxy.store.store import Store

REFRESH = 5.0  # seconds a loaded distribution is used before it is read again
BAND_NAMES = (ALL, *(name for _, name in BANDS), TOP_BAND)
ETA_QUANTILE = 0.5
ETA_P90_QUANTILE = 0.9


@dataclass(frozen=True, slots=True)
class Eta:
    """When a job's batch is expected to end (unix seconds): the median and a pessimistic 90th percentile."""

    eta: float
    eta_p90: float


class TurnaroundBook:
    def __init__(
        self, store: Store, config: Callable[[], Config], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._cache: dict[str, tuple[float, dict[str, Turnaround]]] = {}
        self._loading: dict[str, asyncio.Task[dict[str, Turnaround]]] = {}

    async def fresh(self, group: str) -> dict[str, Turnaround]:
        """Every band's turnaround of `group`, read again when the cached copy is older than REFRESH."""
        cached = self._cache.get(group)
        if cached is not None and self.clock() - cached[0] < REFRESH:
            return cached[1]
        return await self._load(group)

    def cached(self, group: str) -> dict[str, Turnaround]:
        """What is known without waiting; a stale or missing copy is reloaded in the background (the hot path
        never waits for Redis here). Priors until the first load has completed."""
        cached = self._cache.get(group)
        if cached is None or self.clock() - cached[0] >= REFRESH:
            self._load_later(group)
        return cached[1] if cached is not None else {band: self._prior(group) for band in BAND_NAMES}

    def need(self, group: str) -> float:
        """Seconds a batch of `group` started now must be given before a deadline (less the safety margin) to take
        the batch lane (cached, see `cached`; `need_of` says how)."""
        return self.need_of(self.cached(group), group)

    def need_of(self, bands: dict[str, Turnaround], group: str) -> float:
        """From `group`'s bands: the turnaround at `level(group)`; under lane_rule expected_cost, once learned,
        plus cancel_lead (a batch still running that long before a job's last safe moment is cancelled, so it
        must end by then to answer the job)."""
        dist = bands[ALL]
        worker = self.config().worker
        lead = worker.cancel_lead if worker.lane_rule == "expected_cost" and dist.learned else 0.0
        return dist.quantile(self.level(group)) + lead

    def level(self, group: str) -> float:
        """The probability of ending in time a batch of `group` must have to be chosen (0..1).

        `lane_rule: confidence`: the configured turnaround_confidence. `expected_cost` (default): the break-even
        probability against the venue a call would take instead (flex where the model has it, at its expected
        price with the 429s paid at list; else sync at list), counting a late batch as rescued at list price with
        its line billed too (the worst case); never above turnaround_confidence. A late batch's job is rescued at
        its last safe moment by the deadline guard, so the deadline does not depend on this level."""
        config = self.config()
        worker = config.worker
        if worker.lane_rule == "confidence":
            return worker.turnaround_confidence
        batch = float(1 - batch_discount_of(config, group))  # the model's provider's batch price
        rate = config.policy.flex_unavailable_rate
        alternative = (1 - rate) * batch + rate if has_flex(config, group) else 1.0
        found = break_even(batch=batch, rescue=1.0, waste=batch, alternative=alternative)
        return min(worker.turnaround_confidence, found)

    def median(self, group: str) -> float:
        """Seconds a batch of `group` started now takes, median (cached, see `cached`)."""
        return self.cached(group)[ALL].quantile(ETA_QUANTILE)

    async def observe(self, group: str, *, jobs: int, seconds: float) -> None:
        """Learn from one ended batch of `jobs` requests that took `seconds` from submission to its end."""
        await self.store.turnarounds.observe(
            group,
            (band_of(jobs), ALL),
            bucket=bucket_of(max(0.0, seconds)),
            half_life=self.config().worker.turnaround_half_life,
        )
        self._cache.pop(group, None)

    def eta(self, group: str, *, start: float, elapsed: float = 0.0, jobs: int | None = None) -> Eta:
        """The ETA of a job whose batch starts (or started `elapsed` seconds before) `start + elapsed`."""
        dist = for_batch(self.cached(group), jobs)
        now = start + elapsed
        median = dist.remaining(elapsed, ETA_QUANTILE) if elapsed > 0 else dist.quantile(ETA_QUANTILE)
        p90 = dist.remaining(elapsed, ETA_P90_QUANTILE) if elapsed > 0 else dist.quantile(ETA_P90_QUANTILE)
        return Eta(now + (median or 0.0), now + (p90 or 0.0))

    def _prior(self, group: str) -> Turnaround:
        config = self.config()
        return Turnaround(
            config.batch_knobs(group).turnaround_estimate, min_batches=config.worker.turnaround_min_batches
        )

    async def _load(self, group: str) -> dict[str, Turnaround]:
        bands = await load_turnarounds(self.store, self.config(), group)
        self._cache[group] = (self.clock(), bands)
        return bands

    def _load_later(self, group: str) -> None:
        if group in self._loading:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._load(group))
        except RuntimeError:
            return  # no loop (a synchronous caller such as `policy explain`): priors it is
        self._loading[group] = task
        task.add_done_callback(lambda done: self._loaded(group, done))

    def _loaded(self, group: str, task: asyncio.Task[dict[str, Turnaround]]) -> None:
        self._loading.pop(group, None)
        if not task.cancelled():
            task.exception()  # a failed read is retried on the next use; the cached copy stays meanwhile


def has_flex(config: Config, group: str) -> bool:
    """Whether `group` (a model, or a queue group) has a flex tier: its deployment says so, chat only."""
    deployment = config.deployment(group)
    return bool(deployment and deployment.supports_flex and endpoint_of(group) is Endpoint.CHAT_COMPLETIONS)


def for_batch(bands: dict[str, Turnaround], jobs: int | None) -> Turnaround:
    """The distribution a batch of `jobs` requests is judged by: its band's once learned, else the group's."""
    if jobs is not None:
        band = bands.get(band_of(jobs))
        if band is not None and band.learned:
            return band
    return bands[ALL]


REPORTED_QUANTILES = (0.5, 0.9, 0.99)


async def load_turnarounds(store: Store, config: Config, group: str) -> dict[str, Turnaround]:
    """Every band's learned turnaround of `group`, straight from the store (the status report, the gauges)."""
    prior = config.batch_knobs(group).turnaround_estimate
    minimum = config.worker.turnaround_min_batches
    counts = await store.turnarounds.load(group, BAND_NAMES)
    return {band: Turnaround(prior, found.weights, found.seen, minimum) for band, found in counts.items()}


def turnaround_json(bands: dict[str, Turnaround], *, confidence: float) -> dict[str, object]:
    """A group's turnaround as the status document shows it: seconds per quantile, per band seen."""

    def one(dist: Turnaround) -> dict[str, object]:
        quantiles = {f"p{round(q * 100)}": round(dist.quantile(q), 3) for q in REPORTED_QUANTILES}
        return {"learned": dist.learned, "batches_seen": dist.seen, "seconds": quantiles}

    return {
        **one(bands[ALL]),
        "confidence": confidence,
        "at_confidence_seconds": round(bands[ALL].quantile(confidence), 3),
        "bands": {band: one(dist) for band, dist in bands.items() if band != ALL and dist.seen},
    }
