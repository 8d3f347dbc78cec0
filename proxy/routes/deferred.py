"""`/v1/deferred`: read (optionally long-polled with `Prefer: wait=N`), cancel and list jobs (proxy/jobs/)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from proxy.delivery.preferences import applied, parse_prefer
from proxy.jobs import service as jobs
from proxy.jobs.render import job_json, job_page_json
from proxy.routes.dependencies import CallerDep, LiveDep, RuntimeDep

router = APIRouter()
JSON = "application/json"


@router.get("/v1/deferred/{job_id}")
async def get_deferred(
    job_id: str, request: Request, runtime: RuntimeDep, live: LiveDep, caller: CallerDep
) -> Response:
    view = await jobs.own_job(runtime.store, caller, job_id)
    wait = parse_prefer(request.headers.getlist("prefer")).wait
    if wait is None:
        view = await jobs.fresh_eta(runtime.store, runtime.turnarounds, view)
        return Response(job_json(view), media_type=JSON)
    wait = min(wait, live.config.delivery.max_wait)  # Prefer: wait=N long-polls (delivery/waiting.py)
    if not view.is_final:
        view = await runtime.waiters.wait(job_id, wait) or view
    view = await jobs.fresh_eta(runtime.store, runtime.turnarounds, view)
    return Response(job_json(view), media_type=JSON, headers=applied(wait=wait))


@router.delete("/v1/deferred/{job_id}")
async def cancel_deferred(job_id: str, runtime: RuntimeDep, live: LiveDep, caller: CallerDep) -> Response:
    view = await jobs.cancel(runtime.store, live.config, runtime.batch_client, caller, job_id)
    if view.status == "cancelled" and runtime.budgets is not None:
        await runtime.budgets.release(view.id)  # its budget reservation (proxy/budgets.py), if it had one
    return Response(job_json(view), media_type=JSON)


@router.get("/v1/deferred")
async def list_deferred(
    runtime: RuntimeDep,
    caller: CallerDep,
    status: str | None = None,
    limit: int = 20,
    after: str | None = None,
) -> Response:
    views, more = await jobs.list_jobs(runtime.store, caller, status=status, limit=limit, after=after)
    return Response(job_page_json(views, has_more=more), media_type=JSON)
