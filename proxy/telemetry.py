"""Telemetry: every finished request becomes metrics and a line in the savings ledger, off the hot path.

One `Telemetry` per process (built by `build_runtime`, `Runtime.events`). The worker reports through it as its
`WorkerEvents`; the API process hands it the requests it answered itself (`proxy.sync_accounting`). Recording
is an append to a buffer: a background task parses the usage, prices it, counts the Prometheus metrics and
writes the ledger in Redis, so no request waits for Redis. `aclose()` (called by `close_runtime`) writes what
is still buffered. A job's ledger write is idempotent (its id is the marker), so a retry never counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from proxy.accounting import Accounting, Forfeit, increments
from proxy.budgets import Budgets
from proxy.events import WastedLine, WorkerEvents
from proxy.metrics import Metrics
from proxy.pricing import LANES, Cost, Lane, PriceBook, Usage
from proxy.reasons import RescueReason, WebhookOutcome
from proxy.reconciliation import Reconciliation
from proxy.store.ledger import bucket_of
from proxy.store.outcomes import Finished
from proxy.store.shadow_calls import ShadowCall, ShadowCalls

log = logging.getLogger("batchgate.telemetry")

WRITE_BATCH = 256  # entries per flush step; those with a job id are written concurrently, one call each
RETRY_PAUSE = 1.0
WRITE_WINDOW = 0.05  # seconds a background write waits for more records to join it (bench/RESULTS.md, issue 17)
MAX_BUFFERED = 200_000
CLOSE_TIMEOUT = 10.0
NOTHING = Cost(Decimal(0), Decimal(0))


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """One answered request, as recorded.

    lane: the lane that answered (and paid). outcome: completed, failed or cancelled.
    body: the provider's response body; its `usage` is read in the background. usage: given directly
    (streams); None with no body means the usage is unknown (counted as unknown cost).
    shadow_lane: shadow mode; the request is also recorded as if answered in that lane.
    check_flex_tier: the lane is `flex` only if the response says it was served by the flex tier.
    """

    team: str
    model: str
    lane: str
    outcome: str
    at: float
    body: bytes | None = None
    usage: Usage | None = None
    seconds: float | None = None
    deadline_margin: float | None = None
    job_id: str | None = None
    shadow_lane: str | None = None
    check_flex_tier: bool = False
    rescue_reason: str | None = None
    waste_reason: str | None = None
    waste_source: str | None = None
    budget_hold: str | None = None  # the budget reservation this answer settles (proxy/budgets.py)
    price: str | None = None  # a declared venue's price rule it was billed at (PriceBook.cost_at); None: lane's
    deadline_in: float | None = None  # shadow mode: seconds from the call to its deadline (kept for quotes)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One write to the savings ledger (a request makes one, and one more in shadow mode)."""

    team: str
    model: str
    lane: str
    outcome: str
    cost: Cost
    usage: Usage
    at: datetime
    job_id: str | None
    shadow: bool = False
    waste_reason: str | None = None
    waste_source: str | None = None
    forfeit: Forfeit | None = None
    cache_saved: Decimal | None = None  # what the prompt cache saved (pricing.TierPrices.cache_saving)


@dataclass
class LedgerWrite:
    """One call to the ledger: the entries it carries, summed when they have no job id."""

    bucket: tuple[str, int]
    counters: dict[str, int]
    job_id: str | None
    shadow: bool
    entries: list[LedgerEntry]
    waste: str | None = None


def coalesce(entries: list[LedgerEntry]) -> list[LedgerWrite]:
    writes: list[LedgerWrite] = []
    shared: dict[tuple[str, int], LedgerWrite] = {}
    for entry in entries:
        counters = increments(
            team=entry.team, model=entry.model, lane=entry.lane, outcome=entry.outcome,
            cost=entry.cost, usage=entry.usage, shadow=entry.shadow, waste_reason=entry.waste_reason,
            forfeit=entry.forfeit, cache_saved=entry.cache_saved,
        )  # fmt: skip
        bucket = bucket_of(entry.model, entry.at, entry.job_id)
        if entry.job_id is not None:  # idempotent per job: written on its own, with its marker
            writes.append(LedgerWrite(bucket, counters, entry.job_id, entry.shadow, [entry], entry.waste_source))
            continue
        write = shared.get(bucket)
        if write is None:
            shared[bucket] = write = LedgerWrite(bucket, {}, None, False, [])
            writes.append(write)
        for name, amount in counters.items():
            write.counters[name] = write.counters.get(name, 0) + amount
        write.entries.append(entry)
    return writes


class Telemetry(WorkerEvents):
    """Metrics and the savings ledger for every finished request; also the worker's `WorkerEvents`."""

    def __init__(
        self,
        metrics: Metrics,
        accounting: Accounting,
        prices: Callable[[], PriceBook],
        *,
        clock: Callable[[], float] = time.time,
        budgets: Budgets | None = None,
        shadow_calls: ShadowCalls | None = None,
    ) -> None:
        self.metrics = metrics
        self._shadow_calls = shadow_calls  # where shadow-mode calls are kept for quotes (None: not kept)
        self._shadow: list[ShadowCall] = []  # shadow-mode calls not yet kept
        self.budgets = budgets
        self._settlements: list[tuple[str, Cost]] = []  # (budget hold, real cost) not yet settled
        self.accounting = accounting
        self._prices = prices
        self._clock = clock
        self._buffer: list[FinishedRequest] = []
        self._unwritten: list[LedgerEntry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    # --- what the API process records ---

    def request_finished(self, request: FinishedRequest) -> None:
        """Queue one answered request for pricing, metrics and the ledger (never blocks)."""
        if len(self._buffer) >= MAX_BUFFERED:
            log.error("telemetry buffer full: a finished request is not recorded", extra={"model": request.model})
            return
        self._buffer.append(request)
        self._wake()

    def decided(self, *, lane: str, rule: str) -> None:
        self.metrics.record_decision(lane=lane, rule=rule)

    def upstream_error(self, *, lane: str, status: int | None, timeout: bool = False) -> None:
        self.metrics.record_upstream_error(lane=lane, status=status, timeout=timeout)

    # --- WorkerEvents ---

    def job_finished(self, job: Finished) -> None:
        self.request_finished(
            FinishedRequest(
                team=job.team,
                model=job.model,
                lane=job.lane,
                outcome=job.status,
                at=job.finished_at,
                body=job.response if job.status == "completed" else None,
                seconds=job.finished_at - job.created_at if job.created_at else None,
                deadline_margin=None if job.deadline is None else job.deadline - job.finished_at,
                job_id=job.job_id,
                rescue_reason=job.rescue_reason if job.rescued or job.rescue_reason else None,
                budget_hold=job.job_id if self.budgets is not None and self.budgets.active() else None,
                price=job.price,
            )
        )

    def deadline_missed(self, job: Finished) -> None:
        """Counted by `job_finished` (a negative deadline margin is a miss)."""

    def rescue(self, *, job_id: str, group: str, reason: RescueReason) -> None:
        self.metrics.record_rescue(reason)

    def batch_submitted(self, *, group: str, batch_id: str, provider_batch_id: str, jobs: int, size: int) -> None:
        self.metrics.record_batch_submitted(queue=group, size=jobs)

    def batch_ended(
        self,
        *,
        group: str,
        batch_id: str,
        state: str,
        succeeded: int,
        retried: int,
        failed: int,
        turnaround: float = 0.0,
    ) -> None:
        self.metrics.record_batch_finished(queue=group, state=state, turnaround_seconds=turnaround)

    def webhook_attempt(self, *, job_id: str, outcome: WebhookOutcome) -> None:
        self.metrics.record_webhook(outcome)

    def line_wasted(self, line: WastedLine) -> None:
        self.request_finished(
            FinishedRequest(
                team=line.team,
                model=line.model,
                lane=line.lane,
                outcome="completed",
                at=line.at,
                body=line.response,
                job_id=line.job_id,
                waste_reason=line.reason.value,
                waste_source=line.source,
            )
        )

    def batch_reconciled(self, result: Reconciliation) -> None:
        self.metrics.record_reconciliation(
            model=result.model, difference_usd=result.difference_usd, matched=result.matched, checked=result.checked
        )

    # --- the background writer ---

    def _wake(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a synchronous caller): flush() writes it later
        self._flusher = loop.create_task(self._drain(window=WRITE_WINDOW), name="telemetry-flush")

    async def _drain(self, *, window: float = 0.0) -> None:
        """Write what is buffered until nothing is; `window`: seconds to wait first, so that the requests of that
        moment go to Redis in one write instead of one write each (sequential traffic paid a round trip per call)."""
        if window and not self._closed:
            await asyncio.sleep(window)
        while self._buffer or self._unwritten or self._settlements or self._shadow:
            taken, self._buffer = self._buffer, []
            for request in taken:
                self._unwritten.extend(self._price_and_count(request))
            try:
                await self._write_unwritten()
                await self._settle_holds()
                await self._keep_shadow_calls()
            except Exception as exc:  # Redis down, or a bug: keep the records and try again
                log.warning(
                    "savings ledger write failed; retrying",
                    extra={"pending": len(self._unwritten), "error": repr(exc)},
                )
                if self._closed:
                    return
                await asyncio.sleep(RETRY_PAUSE)

    def _price_and_count(self, request: FinishedRequest) -> list[LedgerEntry]:
        """Usage, lane and cost of a request; its Prometheus metrics are counted here, once."""
        parsed = _parsed(request.body)
        lane = _paid_lane(request, parsed)
        usage = request.usage
        if usage is None and parsed is not None and isinstance(parsed.get("usage"), Mapping):
            usage = Usage.from_openai(parsed["usage"])
        if request.outcome != "completed":
            cost, usage = NOTHING, Usage()  # failed or cancelled: nothing billed
        elif usage is None:
            cost, usage = Cost.unknown(), Usage()  # e.g. a stream without include_usage
        elif request.price is not None:
            cost = self._prices().cost_at(request.model, usage, request.price)
        else:
            cost = self._prices().cost(request.model, usage, lane)
        if request.waste_reason is not None:
            return [self._wasted(request, lane, cost, usage)]
        if request.budget_hold is not None:
            self._settlements.append((request.budget_hold, cost))
        forfeit = self._forfeit(request, lane, cost, usage)
        self.metrics.record_finished(
            lane=lane, outcome=request.outcome, model=request.model, team=request.team, usage=usage, cost=cost
        )
        if request.seconds is not None:
            self.metrics.observe_answer(
                lane=lane, model=request.model, seconds=request.seconds, deadline_margin=request.deadline_margin
            )
        at = datetime.fromtimestamp(request.at, UTC)
        saved = None
        if usage.cached_tokens or usage.cache_write_tokens:
            effect = self._prices().cache_saving(request.model, usage, lane)
            if effect is not None:
                read_saving, write_premium = effect
                saved = read_saving - write_premium
                self.metrics.record_prompt_cache(
                    model=request.model, lane=lane, usage=usage, read_saving=read_saving, write_premium=write_premium
                )
        entries = [
            LedgerEntry(request.team, request.model, lane, request.outcome, cost, usage, at, request.job_id,
                        forfeit=forfeit, cache_saved=saved)
        ]  # fmt: skip
        if request.shadow_lane in LANES and request.outcome == "completed":
            shadow_lane: Lane = request.shadow_lane
            would = self._prices().cost(request.model, usage, shadow_lane) if cost.known else Cost.unknown()
            self.metrics.record_shadow(model=request.model, team=request.team, lane=shadow_lane, cost=would)
            if self._shadow_calls is not None and len(self._shadow) < MAX_BUFFERED:
                self._shadow.append(
                    ShadowCall(request.at, request.model, usage.prompt_tokens, usage.completion_tokens,
                               request.deadline_in)
                )  # fmt: skip
            entries.append(
                LedgerEntry(request.team, request.model, shadow_lane, request.outcome, would, usage, at,
                            request.job_id, shadow=True)
            )  # fmt: skip
        return entries

    def _wasted(self, request: FinishedRequest, lane: Lane, cost: Cost, usage: Usage) -> LedgerEntry:
        reason = request.waste_reason or ""
        self.metrics.record_waste(model=request.model, team=request.team, lane=lane, reason=reason, cost=cost)
        at = datetime.fromtimestamp(request.at, UTC)
        return LedgerEntry(request.team, request.model, lane, request.outcome, cost, usage, at, request.job_id,
                           waste_reason=reason, waste_source=request.waste_source)  # fmt: skip

    def _forfeit(self, request: FinishedRequest, lane: Lane, cost: Cost, usage: Usage) -> Forfeit | None:
        """A deferred request answered at list price: what the lane it left would have cost less. Rescued batch
        jobs left `batch`; flex calls that fell back to list (worker or API) left `flex`."""
        if lane != "sync" or request.outcome != "completed" or not cost.known:
            return None
        left: Lane
        fell_back = request.lane == "flex" or request.rescue_reason == RescueReason.FLEX_UNAVAILABLE
        if fell_back:
            reason, left = RescueReason.FLEX_UNAVAILABLE.value, "flex"
        elif request.rescue_reason:
            reason, left = request.rescue_reason, "batch"
        else:
            return None
        would = self._prices().cost(request.model, usage, left)
        if not would.known:
            return None
        forfeit = Forfeit(reason, cost.paid_usd - would.paid_usd)
        self.metrics.record_forfeited(model=request.model, team=request.team, reason=reason, usd=forfeit.usd)
        return forfeit

    async def _keep_shadow_calls(self) -> None:
        """Keep the shadow-mode calls answered since the last write (for quotes)."""
        if self._shadow_calls is None or not self._shadow:
            self._shadow = []
            return
        await self._shadow_calls.add(self._shadow)
        self._shadow = []

    async def _write_unwritten(self) -> None:
        """Write in concurrent chunks; whatever failed stays for the next try (each is written at most once).

        Entries without a job id (synchronous calls) that share a ledger bucket are summed into one write:
        one Redis call per bucket per flush rather than one per request (each request's amounts are still
        rounded to integer pico-dollars on their own, so the sums are exact)."""
        while self._unwritten:
            chunk, rest = self._unwritten[:WRITE_BATCH], self._unwritten[WRITE_BATCH:]
            writes = coalesce(chunk)
            results = await asyncio.gather(
                *(
                    self.accounting.add(w.bucket, w.counters, job_id=w.job_id, shadow=w.shadow, waste=w.waste)
                    for w in writes
                ),
                return_exceptions=True,
            )
            failed = [
                entry
                for write, result in zip(writes, results, strict=True)
                if isinstance(result, BaseException)
                for entry in write.entries
            ]
            self._unwritten = failed + rest
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _settle_holds(self) -> None:
        """Settle the budget reservations of answered calls (each at most once: a hold is gone once settled)."""
        if self.budgets is None:
            self._settlements.clear()
            return
        while self._settlements:
            hold, cost = self._settlements[0]
            await self.budgets.settle(hold, cost)
            self._settlements.pop(0)

    async def flush(self) -> None:
        """Write everything recorded so far (tests and shutdown)."""
        while self._buffer or self._unwritten or self._settlements or (self._flusher and not self._flusher.done()):
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._drain(), name="telemetry-flush")
            await asyncio.shield(self._flusher)

    async def aclose(self) -> None:
        """Write what is buffered (bounded in time), then stop; later records are written by flush() only."""
        try:
            await asyncio.wait_for(self.flush(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.error(
                "savings ledger: records lost at shutdown (Redis unreachable)",
                extra={"lost": len(self._buffer) + len(self._unwritten)},
            )
        finally:
            self._closed = True
            if self._flusher is not None and not self._flusher.done():
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher


def _parsed(body: bytes | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _paid_lane(request: FinishedRequest, parsed: Mapping[str, Any] | None) -> Lane:
    lane = request.lane if request.lane in LANES else "sync"
    if lane == "flex" and request.check_flex_tier and (parsed is None or parsed.get("service_tier") != "flex"):
        return "sync"  # the provider answered at its default tier (flex unavailable): list price
    return lane
