"""Deferred jobs: accept one (for the chat route), read, cancel and list them (`/v1/deferred`)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from proxy.auth import Caller
from proxy.delivery.preferences import applied, parse_prefer
from proxy.delivery.waiting import waiters_of
from proxy.durations import format_instant
from proxy.errors import Conflict, InvalidRequest, NotFound
from proxy.reasons import RescueReason
from proxy.routes.dependencies import CallerDep, LiveDep, RuntimeDep
from proxy.runtime import Runtime
from proxy.settings import Config
from proxy.store import keys
from proxy.store.records import JOB_STATUSES, JobStatus, JobView, NewJob
from proxy.store.store import store_of
from proxy.worker.rescuer import cancel_if_pointless
from proxy.worker.timing import batch_lane_fits, flush_by

log = logging.getLogger("batchgate.deferred")
router = APIRouter()
JSON = "application/json"
OBJECT = "chat.completion.deferred"
MAX_LIST = 100


class DeferredDecision(Protocol):
    """What accepting a job needs from the policy's Decision."""

    @property
    def lane(self) -> str: ...
    @property
    def deadline(self) -> datetime | None: ...
    @property
    def delivery(self) -> str | None: ...
    @property
    def callback_url(self) -> str | None: ...
    @property
    def max_wait(self) -> float | None: ...


async def accept_deferred(
    runtime: Runtime,
    caller: Caller,
    body: dict[str, Any],
    decision: DeferredDecision,
    *,
    idempotency_key: str | None = None,
    idempotency_ttl: float | None = None,
    config: Config | None = None,
) -> JobView:
    """Write the job durably (once per Idempotency-Key and caller) and return it as stored. `config` is the
    snapshot the request read at its start (default: the config in force now)."""
    config = config if config is not None else runtime.config
    model = str(body["model"])
    knobs = config.batch_knobs(model)
    margin = config.worker.safety_margin
    now = time.time()
    deadline = decision.deadline.timestamp() if decision.deadline is not None else None
    lane = decision.lane
    too_short = lane == "batch" and not batch_lane_fits(
        now, deadline=deadline, turnaround=knobs.turnaround_estimate, margin=margin
    )
    if too_short:
        lane = "sync"
        log.info(
            "deadline too short for the batch lane; answering synchronously",
            extra={"model": model, "caller": caller.name, "seconds_left": round((deadline or now) - now, 3)},
        )
    max_wait = decision.max_wait if decision.max_wait is not None else knobs.max_wait
    job = NewJob(
        caller=caller.name,
        team=caller.team,
        model=model,
        body=body,
        lane=lane,
        deadline=deadline,
        delivery=decision.delivery or config.delivery.default,
        callback_url=decision.callback_url,
    )
    due = flush_by(now, deadline=deadline, max_wait=max_wait, turnaround=knobs.turnaround_estimate, margin=margin)
    view, created = await store_of(runtime).jobs.accept(
        job,
        flush_by=due,
        idempotency_key=idempotency_key,
        key_ttl=idempotency_ttl if idempotency_ttl is not None else config.worker.result_ttl,
    )
    if too_short and created:
        runtime.events.rescue(job_id=view.id, group=model, reason=RescueReason.DEADLINE_TOO_SHORT)
    return view


def job_object(view: JobView) -> dict[str, Any]:
    """The job as callers see it (the 202 body, GET, list entries, webhooks). `response` is embedded verbatim."""
    rendered: dict[str, Any] = {
        "id": view.id,
        "object": OBJECT,
        "status": view.status,
        "model": view.model,
        "created_at": int(view.created_at),
        "deadline": format_instant(datetime.fromtimestamp(view.deadline).astimezone()) if view.deadline else None,
        "lane": view.lane,
    }
    if view.rescued:
        rendered["rescued"] = True
    if view.finished_at is not None:
        rendered["finished_at"] = int(view.finished_at)
    if view.response is not None:
        rendered["response"] = orjson.Fragment(view.response)
    if view.error is not None:
        rendered["error"] = view.error
    if view.upstream_request_id:  # the provider's request id of the batch line (or sync call) that answered
        rendered["upstream_request_id"] = view.upstream_request_id
    return rendered


def job_json(view: JobView) -> bytes:
    return orjson.dumps(job_object(view))


def location_of(view: JobView) -> str:
    return f"/v1/deferred/{view.id}"


async def _own_job(runtime: Runtime, caller: Caller, job_id: str) -> JobView:
    view = await store_of(runtime).jobs.get(job_id)
    if view is None or (view.caller != caller.name and not caller.is_master):
        raise NotFound(f"No deferred job found with id '{job_id}'.", param="id")
    return view


@router.get("/v1/deferred/{job_id}")
async def get_deferred(
    job_id: str, request: Request, runtime: RuntimeDep, live: LiveDep, caller: CallerDep
) -> Response:
    view = await _own_job(runtime, caller, job_id)
    wait = parse_prefer(request.headers.getlist("prefer")).wait
    if wait is None:
        return Response(job_json(view), media_type=JSON)
    wait = min(wait, live.config.delivery.max_wait)  # Prefer: wait=N long-polls (delivery/waiting.py)
    if not view.is_final:
        view = await waiters_of(runtime).wait(job_id, wait) or view
    return Response(job_json(view), media_type=JSON, headers=applied(wait=wait))


@router.delete("/v1/deferred/{job_id}")
async def cancel_deferred(job_id: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    await _own_job(runtime, caller, job_id)
    store = store_of(runtime)
    result = await store.jobs.cancel(job_id, retention=runtime.config.worker.result_ttl)
    if result.outcome == "final" and result.status != "cancelled":
        raise Conflict(f"The job is already {result.status}; only an unanswered job can be cancelled.")
    if result.batch_id is not None and result.batch_remaining == 0:
        await cancel_if_pointless(runtime, store, keys.tag_of_job(job_id), result.batch_id)
    return Response(job_json(await _own_job(runtime, caller, job_id)), media_type=JSON)


@router.get("/v1/deferred")
async def list_deferred(
    runtime: RuntimeDep,
    caller: CallerDep,
    status: str | None = None,
    limit: int = 20,
    after: str | None = None,
) -> Response:
    if status is not None and status not in JOB_STATUSES:
        raise InvalidRequest(f"'status' must be one of {', '.join(JOB_STATUSES)}.", param="status")
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"'limit' must be from 1 to {MAX_LIST}.", param="limit")
    wanted: JobStatus | None = status  # type: ignore[assignment,unused-ignore]
    views, more = await store_of(runtime).jobs.list_for_caller(caller.name, status=wanted, limit=limit, after=after)
    page = {
        "object": "list",
        "data": [job_object(view) for view in views],
        "first_id": views[0].id if views else None,
        "last_id": views[-1].id if views else None,
        "has_more": more,
    }
    return Response(orjson.dumps(page), media_type=JSON)
