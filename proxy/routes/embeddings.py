"""POST /v1/embeddings: authenticate, validate, decide the lane, then forward or defer, as chat does.

The synchronous answer is the provider's bytes (OpenAI-shaped providers) or litellm's answer made OpenAI's
CreateEmbeddingResponse; a deferred call goes to its model's embeddings queue (`<model>#embeddings`, a batch
holds one endpoint) and comes back by any delivery mode as an ordinary CreateEmbeddingResponse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from proxy import sync_accounting
from proxy.auth import Caller
from proxy.embedding_requests import parse_embeddings_request
from proxy.endpoints import Endpoint
from proxy.policy.decide import decide
from proxy.policy.decision import Decision
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import lane_facts
from proxy.providers.base import ProviderError
from proxy.providers.failures import upstream_failure
from proxy.requests import ChatRequest, check_batch_line, read_json_body
from proxy.routes.chat import DECISION_HEADER, as_response
from proxy.routes.dependencies import RuntimeDep
from proxy.settings import Config

PATH = Endpoint.EMBEDDINGS.path

router = APIRouter()


@router.post(PATH)
async def embeddings(request: Request, runtime: RuntimeDep) -> Response:
    live = runtime.live
    config = live.config
    caller = live.keys.caller_for(request.headers.get("authorization"))
    request.state.team = caller.team
    payload, size = await read_json_body(request, config.limits.max_body_bytes)
    call = parse_embeddings_request(payload, size, config)
    request.state.model = call.model
    decision = decide_embeddings(config, caller, call, request.headers)
    request.state.decision = decision.lane if not decision.deferred else f"deferred:{decision.lane}"
    sync_accounting.note_decision(runtime, request, decision)
    if decision.deferred:
        from proxy.delivery.respond import respond_deferred  # noqa: PLC0415 - keeps the sync path lean

        check_batch_line(call, config)
        response = await respond_deferred(request, runtime, caller, call, decision, snapshot=config)
    else:
        try:
            upstream = await runtime.completion_client(call.group).complete(call.body)
        except ProviderError as exc:
            raise upstream_failure(exc) from exc
        sync_accounting.record_answer(runtime, request, caller, call, decision, upstream=upstream)
        response = as_response(upstream)
    response.headers[DECISION_HEADER] = decision.header_value()
    return response


def decide_embeddings(config: Config, caller: Caller, call: ChatRequest, headers: Mapping[str, str]) -> Decision:
    """The policy's decision for an embeddings call: its facts name the endpoint (rules match it with
    `endpoints: [embeddings]`), its lanes are the embeddings queue's (no flex; batch only where the provider's
    batch API takes embeddings, else the reason)."""
    facts = RequestFacts(
        caller_name=caller.name,
        team=caller.team,
        model=call.model,
        headers={name.lower(): value for name, value in headers.items()},
        metadata=call.metadata,
        user=call.user,
        prompt_tokens_estimate=call.prompt_tokens_estimate,
        endpoint=call.endpoint,
    )
    decision = decide(config.policy, facts, lane_facts(config, call.group), datetime.now(UTC))
    return dataclasses.replace(decision, endpoint=call.endpoint)
