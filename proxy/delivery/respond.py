"""How a deferred call is answered at the door: 202 Accepted with the job (Location: /v1/deferred/{id})."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from proxy.auth import Caller
from proxy.policy.decision import Decision
from proxy.requests import ChatRequest
from proxy.routes.deferred import accept_deferred, job_json, location_of
from proxy.runtime import Runtime

IDEMPOTENCY_HEADER = "idempotency-key"


async def respond_deferred(
    request: Request, runtime: Runtime, caller: Caller, chat: ChatRequest, decision: Decision
) -> Response:
    view = await accept_deferred(
        runtime, caller, chat.body, decision, idempotency_key=request.headers.get(IDEMPOTENCY_HEADER)
    )
    return Response(
        job_json(view), status_code=202, media_type="application/json", headers={"location": location_of(view)}
    )
