"""Accepting, reading and cancelling deferred jobs. Every dependency is passed in: the store, the config
snapshot the request read, and (to cancel a provider batch) a lookup of the batch client of a model.

The lane is the policy's (`policy.decide`, which already checked that a batch fits the deadline); accepting
writes it as decided.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from proxy.auth import Caller
from proxy.errors import Conflict, InvalidRequest, NotFound
from proxy.events import WorkerEvents
from proxy.jobs.timing import flush_by
from proxy.jobs.turnaround_book import Eta, TurnaroundBook
from proxy.providers.base import BatchClient, ProviderError
from proxy.reasons import RescueReason
from proxy.settings import Config
from proxy.store import keys
from proxy.store.records import JOB_STATUSES, BatchRecord, JobStatus, JobView, NewJob
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
    @property
    def hold_until(self) -> datetime | None: ...
    @property
    def venue_body(self) -> Mapping[str, Any]: ...
    @property
    def eta(self) -> float | None: ...
    @property
    def eta_p90(self) -> float | None: ...
    @property
    def venue(self) -> str | None: ...


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
    now = store.clock()
    deadline = decision.deadline.timestamp() if decision.deadline is not None else None
    due = due_at(config, turnarounds, model, decision, now)
    eta = job_eta(decision, turnarounds, model, start=max(now, due))
    hold = decision.hold_until.timestamp() if decision.hold_until is not None else None
    if decision.lane == "sync":
        log.info(
            "deferred call goes to the sync lane: %s", decision.reason, extra={"model": model, "caller": caller.name}
        )
    job = NewJob(
        caller=caller.name,
        team=caller.team,
        model=model,
        body={**body, **decision.venue_body} if decision.venue_body else body,
        lane=decision.lane,
        deadline=deadline,
        delivery=decision.delivery or config.delivery.default,
        callback_url=decision.callback_url,
        max_wait=decision.max_wait,
        eta=eta.eta if eta is not None else None,
        eta_p90=eta.eta_p90 if eta is not None else None,
        venue=decision.venue if decision.venue in config.policy.venue_names else None,
    )
    view, created = await store.jobs.accept(
        job,
        flush_by=due,
        idempotency_key=idempotency_key,
        key_ttl=idempotency_ttl if idempotency_ttl is not None else config.worker.result_ttl,
        fingerprint=fingerprint,
        attach=attach,
        ready_at=hold,
        job_id=job_id,
    )
    if created and decision.rescue_reason is not None and events is not None:
        events.rescue(job_id=view.id, group=model, reason=decision.rescue_reason)
    return view


def due_at(
    config: Config, turnarounds: TurnaroundBook | None, group: str, decision: DeferredDecision, now: float
) -> float:
    """When a job accepted `now` (unix seconds) is due for a batch: by the rule's `max_wait` (else the queue's) or,
    sooner, by the last moment a batch still meets its deadline at the configured confidence."""
    knobs = config.batch_knobs(group)
    turnaround = turnarounds.need(group) if turnarounds is not None else knobs.turnaround_estimate
    deadline = decision.deadline.timestamp() if decision.deadline is not None else None
    max_wait = decision.max_wait if decision.max_wait is not None else knobs.max_wait
    margin = config.worker.safety_margin
    return flush_by(now, deadline=deadline, max_wait=max_wait, turnaround=turnaround, margin=margin)


def decision_eta(
    config: Config, turnarounds: TurnaroundBook | None, group: str, decision: DeferredDecision, now: float
) -> Eta | None:
    """The ETA a deferred decision's job gets when accepted `now` (the decision header and the 202 show it)."""
    return job_eta(decision, turnarounds, group, start=max(now, due_at(config, turnarounds, group, decision, now)))


def job_eta(decision: DeferredDecision, turnarounds: TurnaroundBook | None, group: str, *, start: float) -> Eta | None:
    """A new job's ETA: the decision's when it carries one (the decision header shows the same), else, on the batch
    lane, from the learned turnaround of a batch started at `start` (unix seconds, when its queue is due)."""
    if decision.eta is not None and decision.eta_p90 is not None:
        return Eta(decision.eta, decision.eta_p90)
    if turnarounds is None or decision.lane != "batch":
        return None
    return turnarounds.eta(group, start=start)


async def fresh_eta(store: Store, turnarounds: TurnaroundBook | None, view: JobView) -> JobView:
    """A waiting batch job with its ETA recomputed from the current learned turnaround: a queued job's batch
    starts when its queue is due; a submitted one's has run since its submission (the ETA is what remains)."""
    if turnarounds is None or view.is_final or view.lane != "batch" or view.rescued or view.eta is None:
        return view
    await turnarounds.fresh(view.model)  # read again when older than its refresh time
    now = store.clock()
    if not view.batch:
        due = await store.jobs.queued_until(view.id)
        if due is None:
            return view
        eta = turnarounds.eta(view.model, start=max(now, due))
    else:
        record = await store.batches.get(keys.tag_of_job(view.id), view.batch)
        if record is None or record.submitted_at is None:
            return view
        started = min(now, record.submitted_at)
        eta = turnarounds.eta(view.model, start=started, elapsed=now - started, jobs=record.jobs or None)
    return dataclasses.replace(view, eta=eta.eta, eta_p90=eta.eta_p90)


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
    if record is None:
        return False
    return await cancel_batch(
        store, batch_client, record, recheck_in=recheck_in, why="batch cancelled: no job in it still waits for it"
    )


async def cancel_batch(
    store: Store, batch_client: BatchClientFor, record: BatchRecord, *, recheck_in: float, why: str
) -> bool:
    """Cancel a submitted batch upstream (the lines it finished are billed and kept: its next poll, `recheck_in`
    seconds later, ingests them); `why` is logged. True when the cancel was sent; False when the batch is not
    running or already cancelled, or the provider refused (logged)."""
    if record.state != "submitted" or record.cancel_requested or not record.provider_batch_id:
        return False
    try:
        await batch_client(record.group).cancel(record.provider_batch_id)
    except ProviderError as exc:
        log.warning("cancelling a batch failed: %r", exc, extra={"batch": record.id, "why": why})
        return False
    await store.batches.update(record.tag, record.id, cancel_requested="1")
    await store.batches.schedule(record.tag, record.id, at=store.clock() + recheck_in)
    log.info(why, extra={"batch": record.id, "group": record.group})
    return True
