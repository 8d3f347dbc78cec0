"""The worker's webhook loop: claim due deliveries, POST them signed, retry with backoff, dead-letter at the end.

Backoff: attempt n waits min(cap, base * 2**(n-1)) scaled by a random factor in [0.5, 1] (equal jitter), where
base = max(0.05 s, retry_period / 17280) and cap = max(base, retry_period / 12): with the default 24 h period
that is 5 s, 10 s, 20 s, ... up to 2 h between attempts (about 20 attempts), and a 3 s test period retries every
50-250 ms. A delivery whose next attempt would fall after first attempt + retry_period goes to the dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from proxy.delivery.services import WebhookServices
from proxy.delivery.ssrf import UnsafeCallback
from proxy.delivery.webhooks.sender import WebhookSender
from proxy.delivery.webhooks.signing import secret_for, signature_headers
from proxy.events import WorkerEvents
from proxy.jobs.render import job_json
from proxy.reasons import WebhookOutcome
from proxy.store.deliveries import Delivery
from proxy.store.records import JobView
from proxy.store.store import Store

log = logging.getLogger("batchgate.webhooks")

CONCURRENCY = 32
DELIVERED_RETENTION = 86400.0


def backoff(attempt: int, retry_period: float, *, rng: Callable[[], float] = random.random) -> float:
    base = max(0.05, retry_period / 17280)
    cap = max(base, retry_period / 12)
    return float(min(cap, base * 2.0 ** max(0, attempt - 1)) * (0.5 + rng() / 2))


def claim_lease(timeout: float) -> float:
    """How long a claimed delivery stays hidden from other workers: the POST's timeout and some slack."""
    return timeout * 1.5 + 2.0


class WebhookDeliverer:
    def __init__(
        self,
        runtime: WebhookServices,
        store: Store,
        *,
        events: WorkerEvents | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.events = events or runtime.events
        self.clock = clock
        self.deliveries = store.deliveries
        self.running: set[asyncio.Task[None]] = set()
        self._sender: WebhookSender | None = None

    def _sender_for(self, timeout: float) -> WebhookSender:
        if self._sender is None:
            self._sender = WebhookSender(timeout=timeout)
        return self._sender

    async def claim(self, tag: str) -> bool:
        """Start the group's deliveries that are due, each its own task (up to CONCURRENCY in flight); True when
        any was started."""
        settings = self.runtime.config.delivery.webhook
        free = CONCURRENCY - len(self.running)
        if free <= 0:
            return False
        started = False
        for job_id in await self.deliveries.claim(tag, limit=free, lease=claim_lease(settings.timeout)):
            task = asyncio.create_task(self.deliver(job_id))
            self.running.add(task)
            task.add_done_callback(self.running.discard)
            started = True
        return started

    async def idle(self, groups: dict[str, str]) -> bool:
        if self.running:
            return False
        for tag in groups:
            if await self.deliveries.pending(tag):
                return False
        return True

    async def aclose(self) -> None:
        for task in list(self.running):
            task.cancel()  # the claim lapses and the delivery is sent again (at-least-once)
        if self._sender is not None:
            await self._sender.aclose()

    async def deliver(self, job_id: str) -> None:
        try:
            await self._deliver(job_id)
        except Exception:
            log.exception("webhook delivery failed unexpectedly; it will be retried", extra={"job_id": job_id})
            self.runtime.metrics.record_task_failure("webhook")

    async def _deliver(self, job_id: str) -> None:
        delivery = await self.deliveries.get(job_id)
        if delivery is None or delivery.state != "pending":
            return
        config = self.runtime.config
        settings = config.delivery.webhook
        view = await self.store.jobs.get(job_id)
        secret = secret_for(config, delivery.caller)
        if view is None or secret is None:
            reason = "the job expired" if view is None else "no webhook secret applies to the job's caller"
            await self._give_up(delivery, None, reason, outcome=WebhookOutcome.REFUSED)
            return
        body = job_json(view)
        headers = signature_headers(secret, delivery.webhook_id, int(self.clock()), body)
        try:
            result = await self._sender_for(settings.timeout).post(
                delivery.url, body, headers, allow_hosts=settings.allow_hosts, seconds=settings.timeout
            )
        except UnsafeCallback as refused:
            reason = f"refused by the SSRF guard: {refused}"
            await self._give_up(delivery, None, reason, outcome=WebhookOutcome.REFUSED)
            return
        if result.delivered and result.status is not None:
            await self.deliveries.succeed(job_id, status=result.status, retention=DELIVERED_RETENTION)
            self.events.webhook_attempt(job_id=job_id, outcome=WebhookOutcome.DELIVERED)
            log.info("webhook delivered", extra=_fields(view, delivery, result.status))
            return
        await self._retry_or_give_up(delivery, result.status, result.error)

    async def _retry_or_give_up(self, delivery: Delivery, status: int | None, error: str) -> None:
        period = self.runtime.config.delivery.webhook.retry_period
        at = self.clock() + backoff(delivery.attempts + 1, period)
        if at > delivery.first_at + period:
            reason = f"retry period exhausted; last: {error}"
            await self._give_up(delivery, status, reason, outcome=WebhookOutcome.DEAD_LETTER)
            return
        await self.deliveries.retry(delivery.job_id, at=at, status=status, error=error)
        self.events.webhook_attempt(job_id=delivery.job_id, outcome=WebhookOutcome.RETRIED)
        log.info("webhook attempt failed; will retry",
                 extra={"job_id": delivery.job_id, "attempt": delivery.attempts + 1, "error": error})  # fmt: skip

    async def _give_up(self, delivery: Delivery, status: int | None, reason: str, *, outcome: WebhookOutcome) -> None:
        retention = self.runtime.config.worker.result_ttl
        if await self.deliveries.give_up(delivery, status=status, error=reason, retention=retention):
            self.events.webhook_attempt(job_id=delivery.job_id, outcome=outcome)
            log.warning("webhook dead-lettered", extra={"job_id": delivery.job_id, "reason": reason})


def _fields(view: JobView, delivery: Delivery, status: int) -> dict[str, object]:
    return {"job_id": view.id, "caller": view.caller, "attempt": delivery.attempts + 1, "status": status}
