"""Recording the calls the API process answers itself (sync, flex, shadow), without slowing them down.

`proxy/routes/chat.py` calls these once per branch. Each is an append to the process's `Telemetry` buffer (no
Redis round trip, no JSON parsing on the request's path): usage is read from the provider's body, priced and
written to the ledger by the telemetry's background task.

Streams: batchgate asks the upstream for every stream's usage (`proxy/providers/stream_usage.py`); the
`UsageTap` that relays the stream reads it, and the request is recorded when the stream ends. A stream whose
upstream sent no usage (it ignores `stream_options`, or the caller went away first) is counted with unknown usage
(`unknown_cost_requests`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from proxy.auth import Caller
from proxy.policy.decision import Decision
from proxy.pricing import Usage
from proxy.providers.base import UpstreamResponse
from proxy.providers.stream_usage import UsageTap
from proxy.requests import ChatRequest
from proxy.runtime import Runtime
from proxy.telemetry import FinishedRequest, Telemetry

STARTED = "batchgate_started"
HOLD_STATE = "budget_hold"  # proxy/budgets_gate.py: the budget reservation the answer settles


def telemetry_of(runtime: Runtime) -> Telemetry | None:
    events = runtime.events
    return events if isinstance(events, Telemetry) else None


def note_decision(runtime: Runtime, request: Request, decision: Decision) -> None:
    """Count the policy decision and start the clock of the answer."""
    setattr(request.state, STARTED, time.perf_counter())
    telemetry = telemetry_of(runtime)
    if telemetry is not None:
        telemetry.decided(lane=decision.lane, rule=decision.rule)


def record_answer(
    runtime: Runtime,
    request: Request,
    caller: Caller,
    chat: ChatRequest,
    decision: Decision,
    *,
    upstream: UpstreamResponse,
) -> None:
    """A non-streamed answer (or error) from the provider."""
    telemetry = telemetry_of(runtime)
    if telemetry is None:
        return
    ok = upstream.status < 400
    if not ok:
        telemetry.upstream_error(lane=decision.lane, status=upstream.status)
    telemetry.request_finished(
        _finished(request, caller, chat, decision, outcome="completed" if ok else "failed", body=upstream.body)
    )


def record_stream(
    runtime: Runtime,
    request: Request,
    caller: Caller,
    chat: ChatRequest,
    decision: Decision,
    *,
    response: Response,
    tap: UsageTap,
) -> Response:
    """A streamed answer relayed through `tap`: recorded with the usage it read when the stream ends (or the
    client goes away)."""
    telemetry = telemetry_of(runtime)
    if telemetry is None or not isinstance(response, StreamingResponse):
        return response

    def on_end(finished: bool) -> None:
        outcome = "completed" if finished else "cancelled"
        usage = None if tap.usage is None else Usage.from_openai(tap.usage)
        telemetry.request_finished(_finished(request, caller, chat, decision, outcome=outcome, usage=usage))

    response.body_iterator = watch_stream(response.body_iterator, on_end)
    return response


def _finished(
    request: Request,
    caller: Caller,
    chat: ChatRequest,
    decision: Decision,
    *,
    outcome: str,
    body: bytes | None = None,
    usage: Usage | None = None,
) -> FinishedRequest:
    started = getattr(request.state, STARTED, None)
    now = time.time()
    deadline_in = None
    if decision.shadow and decision.deadline is not None:  # from the moment the call came in
        elapsed = 0.0 if started is None else time.perf_counter() - started
        deadline_in = decision.deadline.timestamp() - (now - elapsed)
    return FinishedRequest(
        team=caller.team,
        model=chat.group,
        lane=decision.lane,
        outcome=outcome,
        at=now,
        body=body if outcome == "completed" else None,
        usage=usage,
        seconds=None if started is None else time.perf_counter() - started,
        shadow_lane=decision.shadow_lane if decision.shadow else None,
        check_flex_tier=True,
        budget_hold=getattr(request.state, HOLD_STATE, None),
        deadline_in=deadline_in,
    )


async def watch_stream(chunks: AsyncIterable[Any], on_end: Callable[[bool], None]) -> AsyncIterator[Any]:
    """Pass the chunks through; when the stream ends, report whether it ran to its end."""
    finished = False
    try:
        async for chunk in chunks:
            yield chunk
        finished = True
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
        on_end(finished)
