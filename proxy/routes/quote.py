"""POST /v1/quote (what calls would cost on each venue, proxy/quote.py) and POST /v1/policy/explain (the decision
a chat call would get, with the venues the `auto` lane considered). Neither calls a provider nor writes a job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from proxy.durations import format_instant, human_duration
from proxy.errors import InvalidRequest
from proxy.jobs.turnaround import ALL
from proxy.jobs.turnaround_book import ETA_QUANTILE
from proxy.policy.decision import Decision
from proxy.quote import Turnarounds, parse_calls, parse_text, prior_turnarounds, quote, shadow_calls
from proxy.requests import parse_chat_request, read_body
from proxy.routes.chat import decide_for
from proxy.routes.dependencies import CallerDep, LiveDep, RuntimeDep
from proxy.runtime import Runtime
from proxy.store.shadow_calls import RETENTION

router = APIRouter()
JSON = "application/json"


@router.post("/v1/quote")
async def post_quote(
    request: Request, runtime: RuntimeDep, live: LiveDep, _caller: CallerDep, deadline: str | None = None
) -> Response:
    """Body: JSONL of chat calls (or batch-file lines), or a JSON array of them; each may carry `deadline`, else
    the `deadline` query parameter, else the policy's default_deadline. Or `{"shadow_hours": N}`: the shadow-mode
    calls of the last N hours (N > 0, at most the 7 days they are kept)."""
    config = live.config
    raw = await read_body(request, config.limits.max_body_bytes)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidRequest("the quote body must be UTF-8 text", code="invalid_quote") from None
    now = datetime.now(UTC)
    hours = _shadow_hours(text)
    if hours is None:
        calls, source = parse_calls(parse_text(text), config, now, default_deadline=deadline), "the calls given"
    else:
        kept = await runtime.store.shadow_calls.since(now.timestamp() - hours * 3600)
        calls = shadow_calls(kept, config, now)
        source = f"shadow-mode traffic of the last {human_duration(hours * 3600)} ({len(kept)} calls kept)"
    seen = {call.model: await _turnarounds(runtime, call.model) for call in calls}
    document = quote(config, live.prices, seen.__getitem__, calls, now, source=source)
    return Response(orjson.dumps(document), media_type=JSON)


@router.post("/v1/policy/explain")
async def post_explain(request: Request, runtime: RuntimeDep, live: LiveDep, caller: CallerDep) -> Response:
    """Body: a chat-completions body, sent with the headers a real call would carry (X-Batch-Deadline, ...)."""
    config = live.config
    raw = await read_body(request, config.limits.max_body_bytes)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be a JSON chat-completions request", code="invalid_json") from None
    chat = parse_chat_request(payload, len(raw), config)
    decision = decide_for(config, caller, chat, request.headers, runtime.turnarounds, prices=live.prices)
    return Response(orjson.dumps(explained(decision)), media_type=JSON)


def _shadow_hours(text: str) -> float | None:
    """N of a `{"shadow_hours": N}` body; None for a body of calls. InvalidRequest when N is not a positive number
    of hours up to the retention."""
    stripped = text.strip()
    if not stripped.startswith("{") or "shadow_hours" not in stripped:
        return None
    try:
        loaded = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None  # JSONL of calls: parse_text names the bad line
    if not isinstance(loaded, dict) or "shadow_hours" not in loaded:
        return None
    hours = loaded["shadow_hours"]
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= RETENTION / 3600:
        message = f"shadow_hours must be a number of hours above 0 and at most {RETENTION / 3600:g}"
        raise InvalidRequest(message, code="invalid_quote", param="shadow_hours")
    return float(hours)


def explained(decision: Decision) -> dict[str, Any]:
    """A decision as `POST /v1/policy/explain` answers it: the header, the lane and venue, and every venue the
    `auto` lane considered (cheapest first) with its price (share of list), ETA and verdict."""
    return {
        "decision": decision.header_value(),
        "deferred": decision.deferred,
        "lane": decision.lane,
        "venue": decision.venue or decision.lane,
        "rule": decision.rule,
        "reason": decision.reason,
        "deadline": format_instant(decision.deadline) if decision.deadline is not None else None,
        "eta": int(decision.eta) if decision.eta is not None else None,
        "eta_p90": int(decision.eta_p90) if decision.eta_p90 is not None else None,
        "prompt_cache": _cache_report(decision),
        "venues": [
            {
                "venue": item.venue.name,
                "lane": item.venue.lane,
                "price_share": round(item.venue.price, 6),
                "eta_seconds": round(item.venue.eta, 3),
                "need_seconds": round(item.venue.need, 3),
                "hold_seconds": round(item.venue.hold, 3),
                "fits": item.fits,
                "note": item.note,
                "chosen": item.venue.name == decision.venue,
            }
            for item in decision.considered
        ],
    }


def _cache_report(decision: Decision) -> dict[str, Any] | None:
    """The prompt prefix too short to cache at the provider (None: nothing to report)."""
    if decision.cache_too_short is None:
        return None
    tokens, minimum = decision.cache_too_short
    return {"status": "too_short", "prefix_tokens": tokens, "minimum_tokens": minimum}


async def _turnarounds(runtime: Runtime, group: str) -> Turnarounds:
    """The batch lane's turnaround for a quote: what the lane choice gives a batch (`TurnaroundBook.need_of`: the
    quantile at the lane rule's level, plus cancel_lead under expected_cost) and the median, seconds."""
    if runtime.turnarounds is None:
        return prior_turnarounds(runtime.config)(group)
    bands = await runtime.turnarounds.fresh(group)
    dist = bands[ALL]
    return Turnarounds(runtime.turnarounds.need_of(bands, group), dist.quantile(ETA_QUANTILE), learned=dist.learned)
