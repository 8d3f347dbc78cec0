"""The simulator's Responses API routes (OpenAI face, under `/v1`): create (plain or streamed, billed at list
price), and retrieve / cancel / delete of stored responses. What the answers are: proxy/simulator/responses.py."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from proxy.errors import InvalidRequest, NotFound
from proxy.simulator.ledger import Tier
from proxy.simulator.openai_face import JSON, admit_sync_call, aiter_events, authorize, json_body
from proxy.simulator.responses import (
    cancel_problem,
    deleted,
    response_answer,
    response_object,
    response_problem,
    stream_events,
)
from proxy.simulator.state import SimulatorState, simulator_state

router = APIRouter()


@router.post("/responses")
async def create_response(request: Request) -> Response:
    state = simulator_state(request)
    engine = state.engine
    opts = engine.options
    authorize(request, opts.api_key)
    body = await json_body(request)
    admit_sync_call(engine, body, response_problem(body))
    answer = response_answer(body)
    engine.bill(body["model"], Tier.SYNC, answer, flavor=opts.flavor)
    headers = state.rates.note(requests=1, tokens=answer.total_tokens).openai_headers()
    final = response_object(body["model"], answer, body)
    if final["store"]:
        state.responses[final["id"]] = final
    if body.get("stream") is True:
        events = stream_events(final, chunk_chars=opts.stream_chunk_chars)
        return StreamingResponse(aiter_events(events), media_type="text/event-stream", headers=headers)
    return Response(orjson.dumps(final), media_type=JSON, headers=headers)


@router.get("/responses/{response_id}")
async def retrieve_response(response_id: str, request: Request) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    return Response(orjson.dumps(_stored(state, response_id)), media_type=JSON)


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    stored = _stored(state, response_id)
    problem = cancel_problem(stored)
    if problem:
        raise InvalidRequest(problem, param="response_id")
    return Response(orjson.dumps(stored), media_type=JSON)


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    _stored(state, response_id)
    del state.responses[response_id]
    return Response(orjson.dumps(deleted(response_id)), media_type=JSON)


def _stored(state: SimulatorState, response_id: str) -> dict[str, object]:
    stored = state.responses.get(response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return stored
