"""Webhook dead letters: list them (`GET /v1/webhooks/dead-letters`) and send one again (`POST .../{id}/replay`).

A caller sees and replays only the deliveries of its own jobs; the master key sees all of them.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from proxy.auth import Caller
from proxy.delivery.webhooks.deliveries import delivery_object
from proxy.errors import Conflict, InvalidRequest, NotFound
from proxy.routes.dependencies import CallerDep, RuntimeDep
from proxy.runtime import Runtime
from proxy.store.deliveries import Deliveries, Delivery
from proxy.store.jobs import valid_job_id

router = APIRouter()
JSON = "application/json"
MAX_LIST = 100


async def _own_delivery(runtime: Runtime, caller: Caller, delivery_id: str) -> tuple[Deliveries, Delivery]:
    deliveries = runtime.store.deliveries
    found = await deliveries.get(delivery_id) if valid_job_id(delivery_id) else None
    if found is None or (found.caller != caller.name and not caller.is_master):
        raise NotFound(f"No webhook delivery found with id '{delivery_id}'.", param="id")
    return deliveries, found


@router.get("/v1/webhooks/dead-letters")
async def list_dead_letters(
    runtime: RuntimeDep, caller: CallerDep, limit: int = 20, after: str | None = None
) -> Response:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"'limit' must be from 1 to {MAX_LIST}.", param="limit")
    owner = None if caller.is_master else caller.name
    found, more = await runtime.store.deliveries.dead_letters(owner, limit=limit, after=after)
    page = {
        "object": "list",
        "data": [delivery_object(delivery) for delivery in found],
        "first_id": found[0].job_id if found else None,
        "last_id": found[-1].job_id if found else None,
        "has_more": more,
    }
    return Response(orjson.dumps(page), media_type=JSON)


@router.get("/v1/webhooks/dead-letters/{delivery_id}")
async def get_dead_letter(delivery_id: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    _, delivery = await _own_delivery(runtime, caller, delivery_id)
    return Response(orjson.dumps(delivery_object(delivery)), media_type=JSON)


@router.post("/v1/webhooks/dead-letters/{delivery_id}/replay")
async def replay_dead_letter(delivery_id: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """Queue the delivery again at once, with a fresh retry period and the same `webhook-id`."""
    deliveries, delivery = await _own_delivery(runtime, caller, delivery_id)
    if await runtime.store.jobs.get(delivery.job_id) is None:
        raise Conflict("The job of this delivery has expired; there is nothing left to deliver.")
    if not await deliveries.replay(delivery):
        raise Conflict(f"The delivery is {delivery.state}, not dead-lettered; only a dead letter can be replayed.")
    _, replayed = await _own_delivery(runtime, caller, delivery_id)
    return Response(orjson.dumps(delivery_object(replayed)), status_code=202, media_type=JSON)
