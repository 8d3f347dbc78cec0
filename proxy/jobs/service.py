"""Accepting, reading and cancelling deferred jobs. Every dependency is passed in: the store, the config
snapshot the request read, and (to cancel a provider batch) a lookup of the batch client of a model.

The lane is the policy's (`policy.decide`, which already checked that a batch fits the deadline); accepting
writes it as decided.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from proxy.auth import Caller
from proxy.errors import Conflict, InvalidRequest, NotFound
from proxy.events import WorkerEvents
from proxy.jobs.timing import flush_by
from proxy.jobs.turnaround_book import TurnaroundBook
from proxy.providers.base import BatchClient, ProviderError
from proxy.reasons import RescueReason
from proxy.settings import Config
from proxy.store import keys
from proxy.store.records import JOB_STATUSES, JobStatus, JobView, NewJob
from proxy.store.store import Store

log = logging.getLogger("batchgate.jobs")

MAX_LIST = 100
BatchClientFor = Callable[[str], BatchClient]  # a model's name -> its provider's batch client


class DeferredDecision(Protocol):
    """What accepting a job needs from the policy's Decision (proxy/policy/decision.py)."""

    @property
    def lane(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def deadline(self) -> datetime | None: ...
    @property
    def delivery(self) -> str | None: ...
    @property
    def callback_url(self) -> str | None: ...
    @property
    def max_wait(self) -> float | None: ...
    @property
    def rescue_reason(self) -> RescueReason | None: ...


async def accept(
    store: Store,
    config: Config,
    caller: Caller,
    body: dict[str, Any],
    decision: DeferredDecision,
    *,
    idempotency_key: str | None = None,
    idempotency_ttl: float | None = None,
    fingerprint: str = "",
    attach: bool = True,
    events: WorkerEvents | None = None,
    turnarounds: TurnaroundBook | None = None,
    group: str | None = None,
    job_id: str | None = None,
) -> JobView:
    """Write the job durably on the decided lane (once per Idempotency-Key and caller); return it as stored.

    Its queue must be flushed by the rule's `max_wait` (else the queue's) or, sooner, by the last moment a batch
    still meets its deadline. `fingerprint` and `attach` as in JobStore.accept. Raises Conflict when the
    Idempotency-Key belongs to another model's job, or to a job that has expired; Unprocessable (422) when it was
    first used with another body. `turnarounds`: the learned turnaround, for the flush time and the job's ETA (None:
    the configured estimate, no ETA). `group` is the job's queue group (proxy/endpoints.py; default: the body's
    model, a chat call).
    """
    model = group or str(body["model"])
    knobs = config.batch_knobs(model)
    margin = config.worker.safety_margin
    now = store.clock()
    turnaround = turnarounds.need(model) if turnarounds is not None else knobs.turnaround_estimate
    deadline = decision.deadline.timestamp() if decision.deadline is not None else None
    max_wait = decision.max_wait if decision.max_wait is not None else knobs.max_wait
    due = flush_by(now, deadline=deadline, max_wait=max_wait, turnaround=turnaround, margin=margin)
    eta = turnarounds.eta(model, start=max(now, due)) if turnarounds is not None and decision.lane == "batch" else None
    if decision.lane == "sync":
        log.info(
            "deferred call goes to the sync lane: %s", decision.reason, extra={"model": model, "caller": caller.name}
        )
    job = NewJob(
        caller=caller.name,
        team=caller.team,
        model=model,
        body=body,
        lane=decision.lane,
        deadline=deadline,
        delivery=decision.delivery or config.delivery.default,
        callback_url=decision.callback_url,
        max_wait=decision.max_wait,
        eta=eta.eta if eta is not None else None,
        eta_p90=eta.eta_p90 if eta is not None else None,
    )
    view, created = await store.jobs.accept(
        job,
        flush_by=due,
        idempotency_key=idempotency_key,
        key_ttl=idempotency_ttl if idempotency_ttl is not None else config.worker.result_ttl,
        fingerprint=fingerprint,
        attach=attach,
        job_id=job_id,
    )
    if created and decision.rescue_reason is not None and events is not None:
        events.rescue(job_id=view.id, group=model, reason=decision.rescue_reason)
    return view


async def own_job(store: Store, caller: Caller, job_id: str) -> JobView:
    """The caller's job (a master key sees every job). Raises NotFound for another caller's or an unknown id."""
    view = await store.jobs.get(job_id)
    if view is None or (view.caller != caller.name and not caller.is_master):
        raise NotFound(f"No deferred job found with id '{job_id}'.", param="id")
    return view


async def cancel(store: Store, config: Config, batch_client: BatchClientFor, caller: Caller, job_id: str) -> JobView:
    """Cancel the caller's unanswered job and return it; its provider batch is cancelled too once nothing in it
    still waits. Raises NotFound (see own_job), Conflict when the job already completed or failed."""
    await own_job(store, caller, job_id)
    result = await store.jobs.cancel(job_id, retention=config.worker.result_ttl)
    if result.outcome == "final" and result.status != "cancelled":
        raise Conflict(f"The job is already {result.status}; only an unanswered job can be cancelled.")
    if result.batch_id is not None and result.batch_remaining == 0:
        await cancel_if_pointless(
            store, batch_client, keys.tag_of_job(job_id), result.batch_id, recheck_in=config.worker.poll_interval_min
        )
    return await own_job(store, caller, job_id)


async def list_jobs(
    store: Store, caller: Caller, *, status: str | None, limit: int, after: str | None
) -> tuple[list[JobView], bool]:
    """The caller's jobs (a master key's: every caller's), newest first, after the job id `after`; and whether
    more follow.
    Raises InvalidRequest for an unknown status or a limit outside 1..MAX_LIST."""
    if status is not None and status not in JOB_STATUSES:
        raise InvalidRequest(f"'status' must be one of {', '.join(JOB_STATUSES)}.", param="status")
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"'limit' must be from 1 to {MAX_LIST}.", param="limit")
    wanted: JobStatus | None = status  # type: ignore[assignment,unused-ignore]
    owner = None if caller.is_master else caller.name
    return await store.jobs.list_for_caller(owner, status=wanted, limit=limit, after=after)


async def cancel_if_pointless(
    store: Store, batch_client: BatchClientFor, tag: str, batch_id: str, *, recheck_in: float
) -> bool:
    """Cancel a submitted batch once no job in it still wants its answer (its finished lines are kept); its next
    poll is due `recheck_in` seconds later. True when the cancel was sent; a provider error is logged, False."""
    if await store.batches.remaining(tag, batch_id):
        return False
    record = await store.batches.get(tag, batch_id)
    if record is None or record.state != "submitted" or record.cancel_requested or not record.provider_batch_id:
        return False
    try:
        await batch_client(record.group).cancel(record.provider_batch_id)
    except ProviderError as exc:
        log.warning("cancelling a pointless batch failed: %r", exc, extra={"batch": batch_id})
        return False
    await store.batches.update(tag, batch_id, cancel_requested="1")
    await store.batches.schedule(tag, batch_id, at=store.clock() + recheck_in)
    log.info("batch cancelled: no job in it still waits for it", extra={"batch": batch_id, "group": record.group})
    return True
