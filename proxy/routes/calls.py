"""The path every non-chat endpoint's call takes (embeddings, Responses): authenticate, validate, decide the lane,
then forward (or relay a stream) or defer, with the same books, metrics and decision header as chat.

An endpoint gives its body parser and, when it streams, the tap that reads its stream's usage; a deferred call
goes to the model's queue of that endpoint (`<model>#<endpoint>`, proxy/endpoints.py: a batch holds one endpoint)
and comes back by any delivery mode as the endpoint's ordinary answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy import sync_accounting
from proxy.auth import Caller
from proxy.budgets_gate import release_unanswered, reserve_call
from proxy.policy.decide import decide
from proxy.policy.decision import Decision
from proxy.policy.lanes import batch_blocker_for, lane_facts
from proxy.providers.base import ProviderError
from proxy.providers.failures import upstream_failure
from proxy.providers.stream_usage import UsageTap
from proxy.requests import ChatRequest, check_batch_line, read_json_body
from proxy.routes.chat import DECISION_HEADER, as_response, relay_stream, request_facts
from proxy.runtime import Runtime
from proxy.settings import Config

Parser = Callable[[Any, int, Config], ChatRequest]


async def serve_call(
    request: Request, runtime: Runtime, parse: Parser, *, stream_tap: Callable[[], UsageTap] | None = None
) -> Response:
    """Answer one call of an endpoint whose body `parse` validates; `stream_tap` makes the tap of a streamed
    call (None: the endpoint never streams; its parser refuses `stream`)."""
    live = runtime.live
    config = live.config
    caller = live.keys.caller_for(request.headers.get("authorization"))
    request.state.team = caller.team
    payload, size = await read_json_body(request, config.limits.max_body_bytes)
    call = parse(payload, size, config)
    request.state.model = call.model
    decision = decide_call(config, caller, call, request.headers)
    request.state.decision = decision.lane if not decision.deferred else f"deferred:{decision.lane}"
    request.state.decision_header = decision.header_value()  # for an upstream error answer (error_decision)
    sync_accounting.note_decision(runtime, request, decision)
    hold = await reserve_call(runtime, request, live, caller=caller, chat=call, decision=decision)  # budgets
    try:
        response = await _answer(
            request, runtime, caller, call, decision=decision, config=config, stream_tap=stream_tap, hold=hold
        )
    except BaseException:
        await release_unanswered(runtime, request, hold, deferred=decision.deferred)
        raise
    if decision.deferred:
        await release_unanswered(runtime, request, hold, deferred=True)
    response.headers[DECISION_HEADER] = decision.header_value()
    return response


async def _answer(
    request: Request,
    runtime: Runtime,
    caller: Caller,
    call: ChatRequest,
    *,
    decision: Decision,
    config: Config,
    stream_tap: Callable[[], UsageTap] | None,
    hold: str | None,
) -> Response:
    client = runtime.completion_client(call.group)
    if decision.deferred:
        from proxy.delivery.respond import respond_deferred  # noqa: PLC0415 - keeps the sync path lean

        check_batch_line(call, config)
        response = await respond_deferred(request, runtime, caller, call, decision, snapshot=config, job_id=hold)
    elif call.stream and stream_tap is not None:
        tap = stream_tap()
        response = await relay_stream(client, call.body, tap)
        response = sync_accounting.record_stream(runtime, request, caller, call, decision, response=response, tap=tap)
    else:
        try:
            upstream = await client.complete(call.body)
        except ProviderError as exc:
            raise upstream_failure(exc) from exc
        sync_accounting.record_answer(runtime, request, caller, call, decision, upstream=upstream)
        response = as_response(upstream)
    return response


def decide_call(config: Config, caller: Caller, call: ChatRequest, headers: Mapping[str, str]) -> Decision:
    """The policy's decision for a call of a non-chat endpoint: its facts name the endpoint (rules match it with
    `endpoints: [...]`), its lanes are the endpoint's queue's (no flex; batch only where the provider's batch API
    takes the endpoint, else the reason), and a field its batch lane cannot honour keeps it synchronous."""
    facts = request_facts(
        caller,
        call,
        headers,
        batch_blocker=batch_blocker_for(config, call.model, call.body, call.endpoint),
        endpoint=call.endpoint,
    )
    decision = decide(config.policy, facts, lane_facts(config, call.group), datetime.now(UTC))
    return dataclasses.replace(decision, endpoint=call.endpoint)
