"""The Anthropic face: `POST /v1/messages` (plain and streamed) and the Message Batches endpoints, over the
same provider-neutral engine as the OpenAI face (answers, tokens, batch lifecycle, faults, ledger).

Errors use Anthropic's shape `{"type": "error", "error": {"type", "message"}}`, so handlers answer directly
instead of raising the OpenAI-shaped ApiError. Batch ids start `msgbatch_`; the batch's record also carries the
attributes the OpenAI face renders, so listing `/v1/batches` stays harmless when both faces are in use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from proxy.simulator.answers import Answer, answer_for
from proxy.simulator.batches import BatchLine, BatchView, LineRequest, Status
from proxy.simulator.engine import BatchNotCancellable, Fault
from proxy.simulator.ledger import Tier
from proxy.simulator.options import SimulatorOptions
from proxy.simulator.prompt_cache import PromptCache
from proxy.simulator.state import SimulatorState, simulator_state

JSON = "application/json"
BATCH_PREFIX = "msgbatch_"
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ROLES = frozenset({"user", "assistant"})
DEFAULT_PAGE = 20
MAX_PAGE = 1000
LINE_ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 500: "api_error"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
# claude-sonnet-4-5-20250929, claude-haiku-4-5, claude-opus-4-1, claude-3-5-sonnet-20241022: (major, minor)
CLAUDE_VERSION = re.compile(r"claude-(?:(?:opus|sonnet|haiku)-)?(\d+)(?:-(\d{1,2}))?(?=-|$)")
EXCLUSIVE_SAMPLING_FROM = (4, 5)  # Claude 4.5 models and later refuse temperature and top_p together
CREDIT_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)

router = APIRouter(prefix="/v1")


def error(status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=dict(headers or {}))


def _out_of_credit(options: SimulatorOptions) -> bool:
    """The account-state knobs, as Anthropic answers them: every call is a 400 about the credit balance."""
    return options.insufficient_quota or options.billing_hard_limit_reached


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)


def _unauthorized(request: Request, state: SimulatorState) -> Response | None:
    key = request.headers.get("x-api-key", "").strip()
    expected = state.engine.options.api_key
    if not key or (expected is not None and key != expected):
        return error(401, "authentication_error", "invalid x-api-key")
    return None


def params_problem(params: Any, options: SimulatorOptions | None = None) -> str | None:
    """Why a Messages request body is invalid (Anthropic's 400 message), or None. With `options`, Claude's
    model rules apply as their knobs say (sampling parameters, empty text blocks)."""
    if not isinstance(params, dict):
        return "The request body must be a JSON object."
    if not isinstance(params.get("model"), str) or not params["model"]:
        return "model: Field required"
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (an integer of at least 1)"
    problem = _messages_problem(params)
    if problem is None and options is not None and options.claude_nonempty_text:
        problem = _empty_text_problem(params)
    if problem is None and options is not None and options.claude_sampling_exclusive:
        problem = _sampling_problem(params)
    return problem


def claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model name, or None when the name carries no version."""
    match = CLAUDE_VERSION.search(model)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def _sampling_problem(params: Mapping[str, Any]) -> str | None:
    version = claude_version(str(params["model"]))
    both = params.get("temperature") is not None and params.get("top_p") is not None
    if both and version is not None and version >= EXCLUSIVE_SAMPLING_FROM:
        return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    return None


def _empty_text_problem(params: Mapping[str, Any]) -> str | None:
    messages = params["messages"]
    for index, message in enumerate(messages):
        content = message["content"]
        if content == "" and not (index == len(messages) - 1 and message["role"] == "assistant"):
            return (
                f"messages.{index}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        for position, block in enumerate(content if isinstance(content, list) else ()):
            if isinstance(block, Mapping) and block.get("type") == "text" and block.get("text") == "":
                return f"messages.{index}.content.{position}.text: text content blocks must be non-empty"
    system = params.get("system")
    for position, block in enumerate(system if isinstance(system, list) else ()):
        if isinstance(block, Mapping) and block.get("type") == "text" and block.get("text") == "":
            return f"system.{position}.text: text content blocks must be non-empty"
    return None


def _messages_problem(params: dict[str, Any]) -> str | None:
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if not isinstance(message.get("content"), str | list):
            return f"messages.{index}.content: Field required"
    system = params.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or a list of text blocks"
    return _tool_results_problem(messages)


def _blocks(message: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    content = message.get("content")
    blocks = content if isinstance(content, list) else ()
    return [block for block in blocks if isinstance(block, Mapping) and block.get("type") == kind]


def _tool_results_problem(messages: list[Any]) -> str | None:
    """Anthropic's rule: every tool_result answers a tool_use of the assistant message right before it."""
    for index, message in enumerate(messages):
        results = _blocks(message, "tool_result")
        if not results:
            continue
        previous = messages[index - 1] if index > 0 else {}
        offered = (
            {block.get("id") for block in _blocks(previous, "tool_use")}
            if previous.get("role") == "assistant"
            else set()
        )
        for result in results:
            if result.get("tool_use_id") not in offered:
                return (
                    f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{result.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
    return None


def content_blocks(answer: Answer) -> list[dict[str, Any]]:
    if answer.tool_calls:
        return [
            {"type": "tool_use", "id": f"toolu_{call.key}", "name": call.name, "input": dict(call.arguments)}
            for call in answer.tool_calls
        ]
    return [{"type": "text", "text": answer.content}]


def message_object(model: str, answer: Answer) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(answer),
        "stop_reason": STOP_REASONS.get(answer.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": answer.prompt_tokens - answer.cache_read_tokens - answer.cache_write_tokens,
            "output_tokens": answer.completion_tokens,
            "cache_creation_input_tokens": answer.cache_write_tokens,
            "cache_read_input_tokens": answer.cache_read_tokens,
        },
    }


def _fault_response(fault: Fault, retry_after_s: int) -> Response:
    if fault.body is not None:
        return Response(fault.body, status_code=fault.status, media_type="text/html")
    if fault.status == 429:
        return error(429, "rate_limit_error", "Number of requests has exceeded your rate limit (simulated).",
                     {"retry-after": str(retry_after_s)})  # fmt: skip
    if fault.status >= 500:
        return error(fault.status, "api_error", "Internal server error (simulated).")
    return error(fault.status, "invalid_request_error", "Invalid request (simulated).")


async def messages(request: Request) -> Response:
    state = simulator_state(request)
    refused = _unauthorized(request, state)
    if refused is not None:
        return refused
    try:
        params = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return error(400, "invalid_request_error", "The request body is not valid JSON.")
    engine = state.engine
    problem = params_problem(params, engine.options) or (CREDIT_MESSAGE if _out_of_credit(engine.options) else None)
    if problem:
        return error(400, "invalid_request_error", problem)
    fault = engine.sync_fault(Tier.SYNC)
    if fault is not None:
        refused = _fault_response(fault, engine.options.retry_after_s)
        refused.headers.update(state.rates.note(requests=0, tokens=0).anthropic_headers())
        return refused
    if engine.options.sync_latency_s:
        await asyncio.sleep(engine.options.sync_latency_s)
    answer = engine.prompt_cache.anthropic(params, answer_for(params))
    engine.bill(params["model"], Tier.SYNC, answer)
    message = message_object(params["model"], answer)
    headers = state.rates.note(requests=1, tokens=answer.total_tokens).anthropic_headers()
    if params.get("stream"):
        events = sse_events(message, chunk_chars=engine.options.stream_chunk_chars)
        return StreamingResponse(iter(list(events)), media_type="text/event-stream", headers=headers)
    return Response(orjson.dumps(message), media_type=JSON, headers=headers)


def sse_events(message: Mapping[str, Any], *, chunk_chars: int) -> Iterator[bytes]:
    """A message as Anthropic streams it: message_start, each content block (text or tool_use) in deltas,
    message_delta, message_stop."""

    def event(name: str, data: Mapping[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield event("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening, text, kind, field = (
                {**block, "input": {}},
                orjson.dumps(block["input"]).decode(),
                "input_json_delta",
                "partial_json",
            )
        else:
            opening, text, kind, field = {"type": "text", "text": ""}, block["text"], "text_delta", "text"
        yield event("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
        for offset in range(0, len(text), chunk_chars):
            delta = {"type": kind, field: text[offset : offset + chunk_chars]}
            yield event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield event("content_block_stop", {"type": "content_block_stop", "index": index})
    yield event("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                  "usage": {"output_tokens": usage["output_tokens"]}})  # fmt: skip
    yield event("message_stop", {"type": "message_stop"})


# Message Batches


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def batch_object(current: BatchView, base_url: str) -> dict[str, Any]:
    record, timeline = current.record, current.timeline
    ended = current.status.is_terminal
    finished = current.finished
    succeeded = sum(1 for line in finished if line.succeeded)
    left = len(record.lines) - len(finished)
    status = current.status
    counts = {
        "processing": 0 if ended else left,
        "succeeded": succeeded,
        "errored": len(finished) - succeeded,
        "canceled": left if status is Status.CANCELLED else 0,
        "expired": left if status is Status.EXPIRED else 0,
    }
    if not ended and not record.options.anthropic_live_counts:
        # Anthropic: requests stay `processing` until the whole batch has ended
        counts = {"processing": len(record.lines), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    return {
        "id": record.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else "canceling" if status is Status.CANCELLING else "in_progress",
        "request_counts": counts,
        "ended_at": _iso(current.seen(timeline.end_at)),
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "archived_at": None,
        "cancel_initiated_at": _iso(current.seen(timeline.cancelling_at)),
        "results_url": f"{base_url}/v1/messages/batches/{record.id}/results" if ended else None,
    }


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _batch_requests(
    payload: Any, options: SimulatorOptions, cache: PromptCache | None = None
) -> tuple[list[LineRequest], str | None]:
    """The parsed requests, or the reason the whole batch is refused (Anthropic refuses it at creation)."""
    max_lines = options.max_batch_lines
    items = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        return [], "requests: at least one request is required"
    if len(items) > min(max_lines, MAX_BATCH_REQUESTS):
        return [], f"requests: a batch takes at most {min(max_lines, MAX_BATCH_REQUESTS)} requests"
    parsed: list[LineRequest] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            return [], f"requests.{index}.custom_id: must match {CUSTOM_ID.pattern}"
        if custom_id in seen:
            return [], f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}"
        seen.add(custom_id)
        params = item.get("params")
        problem = params_problem(params, options)
        body = params if isinstance(params, dict) else {}
        line = LineRequest.from_body(custom_id, body, problem=problem)
        if cache is not None and line.answer is not None:
            line = dataclasses.replace(line, answer=cache.anthropic(body, line.answer))
        parsed.append(line)
    return parsed, None


def _new_batch_id() -> str:
    return f"{BATCH_PREFIX}{uuid.uuid4().hex[:24]}"


@router.post("/messages/batches")
async def create_batch(request: Request) -> Response:
    state = simulator_state(request)
    refused = _unauthorized(request, state)
    if refused is not None:
        return refused
    raw = await request.body()
    if len(raw) > MAX_BATCH_BYTES:
        return error(413, "request_too_large", f"A batch is at most {MAX_BATCH_BYTES} bytes.")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error(400, "invalid_request_error", "The request body is not valid JSON.")
    engine = state.engine
    if _out_of_credit(engine.options):
        return error(400, "invalid_request_error", CREDIT_MESSAGE)
    requests, problem = await asyncio.to_thread(_batch_requests, payload, engine.options, engine.prompt_cache)
    if problem:
        return error(400, "invalid_request_error", problem)
    attributes = {"face": "anthropic", "endpoint": "/v1/messages", "input_file_id": None,
                  "completion_window": "24h", "metadata": None}  # fmt: skip
    record = await asyncio.to_thread(engine.create_batch, _new_batch_id(), requests, [], attributes)
    return _json(batch_object(engine.batch(record.id), _base_url(request)))


def _anthropic_view(state: SimulatorState, batch_id: str) -> BatchView | None:
    return state.engine.batch_of_face(batch_id, BATCH_PREFIX)


def _not_found(batch_id: str) -> Response:
    return error(404, "not_found_error", f"No message batch found with id '{batch_id}'.")


@router.get("/messages/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> Response:
    state = simulator_state(request)
    refused = _unauthorized(request, state)
    if refused is not None:
        return refused
    current = _anthropic_view(state, batch_id)
    if current is None:
        return _not_found(batch_id)
    return _json(batch_object(current, _base_url(request)))


@router.post("/messages/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    state = simulator_state(request)
    refused = _unauthorized(request, state)
    if refused is not None:
        return refused
    if _anthropic_view(state, batch_id) is None:
        return _not_found(batch_id)
    try:
        current = state.engine.cancel_batch(batch_id)
    except BatchNotCancellable:
        return error(409, "invalid_request_error", f"Batch '{batch_id}' has ended and cannot be canceled.")
    return _json(batch_object(current, _base_url(request)))


@router.get("/messages/batches")
async def list_batches(request: Request) -> Response:
    state = simulator_state(request)
    refused = _unauthorized(request, state)
    if refused is not None:
        return refused
    raw_limit = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        return error(400, "invalid_request_error", f"limit: must be an integer from 1 to {MAX_PAGE}")
    limit = int(raw_limit)
    after = request.query_params.get("after_id")
    page: list[BatchView] = []
    has_more = False
    skipping = after is not None
    for current in state.engine.batches_newest_first():
        if not current.record.id.startswith(BATCH_PREFIX):
            continue
        if skipping:
            skipping = current.record.id != after
            continue
        if len(page) == limit:
            has_more = True
            break
        page.append(current)
    base = _base_url(request)
    data = [batch_object(current, base) for current in page]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return _json({"data": data, "has_more": has_more, "first_id": first, "last_id": last})


@router.get("/messages/batches/{batch_id}/results")
async def batch_results(request: Request, batch_id: str) -> Response:
    state = simulator_state(request)
    refused = _unauthorized(request, state)
    if refused is not None:
        return refused
    current = _anthropic_view(state, batch_id)
    if current is None:
        return _not_found(batch_id)
    if not current.status.is_terminal:
        return error(400, "invalid_request_error", f"Batch '{batch_id}' is still processing; no results yet.")
    return StreamingResponse(result_lines(current), media_type="application/x-jsonl")


def result_lines(current: BatchView) -> Iterator[bytes]:
    """An ended batch's results, one JSON line per request: finished lines in finishing order, then the rest."""
    for line in current.finished:
        yield orjson.dumps({"custom_id": line.custom_id, "result": _result(line)}, option=orjson.OPT_APPEND_NEWLINE)
    unfinished = "canceled" if current.status is Status.CANCELLED else "expired"
    for line in current.unfinished:
        yield orjson.dumps({"custom_id": line.custom_id, "result": {"type": unfinished}},
                           option=orjson.OPT_APPEND_NEWLINE)  # fmt: skip


def _result(line: BatchLine) -> dict[str, Any]:
    if line.answer is not None:
        return {"type": "succeeded", "message": message_object(line.model, line.answer)}
    error_type = LINE_ERROR_TYPES.get(line.status_code, "api_error")
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": error_type, "message": line.error_message or ""}},
    }
