"""POST /v1/chat/completions: authenticate, validate, decide the lane, then forward or defer.

This is the hot path, so it is a plain Starlette handler called straight from the ASGI entry (proxy/app.py),
without FastAPI's routing and dependency machinery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from proxy import prompt_cache, sync_accounting
from proxy.auth import Caller
from proxy.budgets_gate import release_unanswered, reserve_call
from proxy.endpoints import Endpoint
from proxy.errors import (
    UPSTREAM_AUTH_CODE,
    UPSTREAM_AUTH_STATUS,
    ApiError,
    UpstreamError,
    provider_error_object,
)
from proxy.jobs.service import decision_eta
from proxy.jobs.turnaround_book import TurnaroundBook
from proxy.policy.decide import decide
from proxy.policy.decision import Decision
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import VenueInputs, batch_blocker_for, dropped_fields_for, lane_facts
from proxy.pricing import PriceBook
from proxy.providers.base import CompletionClient, ProviderError, UpstreamResponse
from proxy.providers.failures import upstream_failure
from proxy.providers.passed_headers import passed_headers
from proxy.providers.stream_usage import UsageTap, usage_requested
from proxy.requests import ChatRequest, check_batch_line, parse_chat_request, read_json_body
from proxy.runtime import Runtime
from proxy.settings import Config
from proxy.venues import completion_budget

PATH = "/v1/chat/completions"
DECISION_HEADER = "x-batchgate-decision"
JSON = "application/json"


async def chat_completions(request: Request, runtime: Runtime) -> Response:
    live = runtime.live  # the one config snapshot this request uses, whatever a reload does meanwhile
    config = live.config
    caller = live.keys.caller_for(request.headers.get("authorization"))
    request.state.team = caller.team
    payload, size = await read_json_body(request, config.limits.max_body_bytes)
    chat = parse_chat_request(payload, size, config)
    request.state.model = chat.model
    decision = decide_for(config, caller, chat, request.headers, runtime.turnarounds, prices=runtime.prices)
    request.state.decision = decision.lane if not decision.deferred else f"deferred:{decision.lane}"
    decision_header = {DECISION_HEADER: decision.header_value()}
    request.state.decision_header = decision_header[DECISION_HEADER]  # for an error answer (error_decision)
    sync_accounting.note_decision(runtime, request, decision)
    hold = await reserve_call(runtime, request, live, caller=caller, chat=chat, decision=decision)
    try:
        response = await _answer(request, runtime, caller, chat, decision=decision, config=config, job_id=hold)
    except BaseException:
        await release_unanswered(runtime, request, hold, deferred=decision.deferred)
        raise
    if decision.deferred:
        await release_unanswered(runtime, request, hold, deferred=True)
    response.headers.update(decision_header)
    return response


async def _answer(
    request: Request,
    runtime: Runtime,
    caller: Caller,
    chat: ChatRequest,
    *,
    decision: Decision,
    config: Config,
    job_id: str | None,
) -> Response:
    if decision.deferred:
        from proxy.delivery.respond import respond_deferred  # noqa: PLC0415 - keeps the sync path lean

        check_batch_line(chat, config)
        return await respond_deferred(request, runtime, caller, chat, decision, snapshot=config, job_id=job_id)
    if chat.stream:
        body, added = usage_requested(_lane_body(chat.body, decision))  # every stream is priced from its usage
        tap = UsageTap(strip=added)
        response = await relay_stream(runtime.completion_client(chat.model), body, tap)
        return sync_accounting.record_stream(runtime, request, caller, chat, decision, response=response, tap=tap)
    upstream = await _complete(runtime.completion_client(chat.model), chat.body, decision)
    sync_accounting.record_answer(runtime, request, caller, chat, decision, upstream=upstream)
    return as_response(upstream)


def error_decision(request: Request, error: ApiError) -> str:
    """`X-Batchgate-Decision` of an error answer: the policy's decision when a lane answered with the error (an
    upstream error passed on), else `lane=none; reason=<error code>`: the call was refused before any lane took
    it (401, 400, 413, a store outage, a 500 of batchgate's own)."""
    decided: str | None = getattr(request.state, "decision_header", None)
    if decided is not None and isinstance(error, UpstreamError):
        return decided
    return refused_decision(error)


def refused_decision(error: ApiError) -> str:
    return f"lane=none; reason={error.code or error.error_type}"


def request_facts(
    caller: Caller,
    call: ChatRequest,
    headers: Mapping[str, str],
    *,
    batch_blocker: str | None,
    dropped_fields: tuple[str, ...] = (),
    endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS,
) -> RequestFacts:
    """What the policy matches a call on: its caller, model, headers (lower-cased names), metadata and size, with
    the field its batch lane cannot carry (`batch_blocker`), the fields its provider drops, and its endpoint."""
    return RequestFacts(
        caller_name=caller.name,
        team=caller.team,
        model=call.model,
        headers={name.lower(): value for name, value in headers.items()},
        metadata=call.metadata,
        user=call.user,
        prompt_tokens_estimate=call.prompt_tokens_estimate,
        stream=call.stream,
        batch_blocker=batch_blocker,
        dropped_fields=dropped_fields,
        endpoint=endpoint,
    )


def decide_for(
    config: Config,
    caller: Caller,
    chat: ChatRequest,
    headers: Mapping[str, str],
    turnarounds: TurnaroundBook | None = None,
    *,
    prices: PriceBook | None = None,
) -> Decision:
    facts = request_facts(
        caller,
        chat,
        headers,
        batch_blocker=batch_blocker_for(config, chat.model, chat.body),
        dropped_fields=dropped_fields_for(config, chat.model, chat.body),
    )
    learned = turnarounds.need(chat.model) if turnarounds is not None else None  # None: the configured estimate
    now = datetime.now(UTC)
    inputs = None
    if config.policy.has_auto:  # the venues are priced only for a policy that can pick one
        inputs = VenueInputs(
            prices.prices(chat.model) if prices is not None else None,
            now,
            prompt_tokens=chat.prompt_tokens_estimate,
            completion_tokens=completion_budget(chat.body),
            batch_median=turnarounds.median(chat.model) if turnarounds is not None else None,
        )
    level = turnarounds.level(chat.model) if turnarounds is not None else None
    lanes = lane_facts(config, chat.model, batch_turnaround=learned, venues=inputs, batch_level=level)
    decision = decide(config.policy, facts, lanes, now)
    if decision.deferred and decision.lane == "batch" and turnarounds is not None:
        eta = decision_eta(config, turnarounds, chat.model, decision, now.timestamp())
        if eta is not None:
            decision = dataclasses.replace(decision, eta=eta.eta, eta_p90=eta.eta_p90)
    if decision.deferred and decision.lane == "batch":
        decision = _with_cache_report(config, chat, decision)
    return decision


def _with_cache_report(config: Config, chat: ChatRequest, decision: Decision) -> Decision:
    """A batched call whose prompt prefix is too short for its provider's cache says so (not silently ignored)."""
    deployment = config.deployment(chat.model)
    short = prompt_cache.too_short(chat.body, deployment.litellm_params.model) if deployment is not None else None
    if short is None:
        return decision
    return dataclasses.replace(decision, cache_too_short=(short.tokens, short.minimum))


def _lane_body(body: dict[str, Any], decision: Decision) -> dict[str, Any]:
    return {**body, "service_tier": "flex"} if decision.lane == "flex" else body


async def _complete(client: CompletionClient, body: dict[str, Any], decision: Decision) -> UpstreamResponse:
    try:
        upstream = await client.complete(_lane_body(body, decision))
        if decision.lane == "flex" and upstream.status == 429:
            # Flex capacity is unavailable right now: the caller is waiting, so pay list price instead.
            upstream = await client.complete(body)
    except ProviderError as exc:
        raise upstream_failure(exc) from exc
    return upstream


def as_response(upstream: UpstreamResponse) -> Response:
    """A provider's answer as ours (its error in OpenAI's shape, raised); the embeddings route shares it."""
    if upstream.status >= 400:
        raise _upstream_error(upstream.status, upstream.body, upstream.headers)
    headers = passed_headers(upstream.headers.items())
    return Response(content=upstream.body, status_code=upstream.status, media_type=JSON, headers=headers)


async def relay_stream(client: CompletionClient, body: dict[str, Any], tap: UsageTap) -> Response:
    """The provider's SSE stream relayed as it arrives, through `tap` (its usage read); an error answer raised."""
    context = client.stream(body)
    try:
        upstream = await context.__aenter__()
    except ProviderError as exc:
        raise upstream_failure(exc) from exc
    if upstream.status >= 400:
        content = b"".join([chunk async for chunk in upstream.chunks])
        await context.__aexit__(None, None, None)
        raise _upstream_error(upstream.status, content, upstream.headers)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.chunks:
                yield chunk
        finally:
            await context.__aexit__(None, None, None)

    return StreamingResponse(
        tap.relay(relay()),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **passed_headers(upstream.headers.items())},
    )


def _upstream_error(status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """The provider's error, in OpenAI's shape, with its status (secrets were redacted by the client)."""
    passed = passed_headers(headers.items())
    error = provider_error_object(status, content)
    if error["code"] == UPSTREAM_AUTH_CODE:
        status = UPSTREAM_AUTH_STATUS
    return UpstreamError(
        status, error["message"], error_type=error["type"], param=error["param"], code=error["code"], headers=passed
    )
