"""The Responses API: `POST /v1/responses` (sync, streamed, or deferred to the batch lane) and the stored
responses at the provider (`GET`, `POST .../cancel`, `DELETE /v1/responses/{id}`), passed through.

A created response takes the path of every non-chat endpoint (proxy/routes/calls.py): the sync answer is the
provider's bytes (providers that serve `/v1/responses`) or litellm's `aresponses` answer; `stream: true` relays
the event stream as it arrives, its usage read from `response.completed`; a deferred call goes to the model's
Responses queue (`<model>#responses`) and comes back by every delivery mode as an ordinary Response object
(the job object says `response.deferred`). Calls the batch lane cannot honour stay synchronous
(proxy/responses_lanes.py). Deferred jobs keep their own ids and `/v1/deferred` lookups.

The stored-response routes are left out of `/openapi.json`: they relay the provider's own API unchanged, and
each described operation costs the schema fuzzer (tests/integration/test_fuzz_api.py) a minute of a loaded CI.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from proxy.endpoints import Endpoint
from proxy.errors import NotFound
from proxy.providers.base import ProviderError
from proxy.providers.failures import upstream_failure
from proxy.providers.stored_responses import stored_response_call
from proxy.responses_requests import parse_responses_request, stored_response_id
from proxy.responses_stream import ResponsesUsageTap
from proxy.routes.calls import serve_call
from proxy.routes.chat import as_response
from proxy.routes.dependencies import CallerDep, RuntimeDep
from proxy.runtime import Runtime

PATH = Endpoint.RESPONSES.path

router = APIRouter()


@router.post(PATH)
async def create_response(request: Request, runtime: RuntimeDep) -> Response:
    return await serve_call(request, runtime, parse_responses_request, stream_tap=ResponsesUsageTap)


@router.get(PATH + "/{response_id}", include_in_schema=False)
async def retrieve_response(response_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    return await _stored(runtime, "GET", stored_response_id(response_id), request.url.query)


@router.post(PATH + "/{response_id}/cancel", include_in_schema=False)
async def cancel_response(response_id: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    return await _stored(runtime, "POST", f"{stored_response_id(response_id)}/cancel")


@router.delete(PATH + "/{response_id}", include_in_schema=False)
async def delete_response(response_id: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    return await _stored(runtime, "DELETE", stored_response_id(response_id))


async def _stored(runtime: Runtime, method: str, path: str, query: str = "") -> Response:
    providers = runtime.providers
    try:
        upstream = await stored_response_call(providers.http, providers.stored_responses(), method, path, query)
    except ProviderError as exc:
        raise upstream_failure(exc) from exc
    if upstream is None:
        raise NotFound(
            "No configured provider serves stored responses (/v1/responses).", param="response_id", code="not_found"
        )
    return as_response(upstream)
