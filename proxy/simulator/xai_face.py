"""The xAI face, under `/xai/v1`: chat completions, files and batches with counters instead of a status and
paged results, over the same engine as the other faces.

Shapes as proxy/providers/xai_batch.py documents them (docs.x.ai batch guide; litellm's xAI batch transformation):
`POST /batches` `{"name", "input_file_id"}` (the simulator creates batches from an input file only, not from
requests added one call at a time); a batch shows `state: {num_requests, num_pending, num_success, num_error,
num_cancelled}` and RFC 3339 `create_time` / `expire_time` / `cancel_time`; no finalizing phase (done when nothing
is pending). An input that does not validate is cancelled by xAI (`cancel_by_xai_message`). A batch past its
expiry keeps its unfinished requests pending and stops; a cancelled batch counts them `num_cancelled`. Results are
paged by `pagination_token`, each `{"batch_request_id", "batch_result": {"response": {"chat_get_completion": ...}}
| {"error": {"code", "message"}}}` with gRPC status names as codes. Batch creation is limited as xAI limits it
("1 batch creation per second per team", docs.x.ai batch guide): a create sooner than `xai_create_interval_s`
after the last one answers 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from proxy.errors import InvalidRequest, NotFound, UpstreamError
from proxy.simulator import openai_face
from proxy.simulator.batches import INFINITY, BatchLine, BatchView, Status
from proxy.simulator.openai_batches import CHAT_ENDPOINT, check_input_file
from proxy.simulator.openai_chat import completion
from proxy.simulator.state import SimulatorState, simulator_state

FACE = "xai"
MAX_NAME = 256  # the simulator's bound on a batch name
MAX_PAGE = 1000
DEFAULT_PAGE = 100
GRPC_CODES = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}

router = APIRouter(prefix="/xai/v1")


async def chat(request: Request) -> Response:
    """xAI's chat completions are OpenAI-shaped; billed under `xai/<model>`."""
    return await openai_face.chat_completions(request, flavor=FACE)


router.add_api_route("/chat/completions", chat, methods=["POST"])
router.add_api_route("/files", openai_face.upload_file, methods=["POST"])
router.add_api_route("/files/{file_id}", openai_face.retrieve_file, methods=["GET"])
router.add_api_route("/files/{file_id}", openai_face.delete_file, methods=["DELETE"])
router.add_api_route("/files/{file_id}/content", openai_face.file_content, methods=["GET"])


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def _iso(moment: float | None) -> str | None:
    if moment is None or moment == INFINITY:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def batch_object(current: BatchView) -> dict[str, Any]:
    """A batch as xAI shows it: counters, no status."""
    record, timeline = current.record, current.timeline
    total, succeeded, failed = current.counts
    unfinished = total - succeeded - failed
    started = current.seen(timeline.in_progress_at) is not None or current.status is Status.CANCELLED
    cancelled = current.status is Status.CANCELLED or bool(record.issues and current.status is Status.FAILED)
    cancel_time = current.seen(timeline.cancelling_at) or (current.seen(timeline.end_at) if cancelled else None)
    refusal = "; ".join(issue.message for issue in record.issues) if current.status is Status.FAILED else None
    return {
        "batch_id": record.id,
        "name": record.attributes["name"],
        "input_file_id": record.attributes["input_file_id"],
        "create_time": _iso(record.created_at),
        "expire_time": _iso(record.expires_at),
        "cancel_time": _iso(cancel_time),
        "cancel_by_xai_message": refusal or None,
        "state": {
            "num_requests": total if started else 0,
            "num_pending": 0 if current.status is Status.CANCELLED else (unfinished if started else 0),
            "num_success": succeeded,
            "num_error": failed,
            "num_cancelled": unfinished if current.status is Status.CANCELLED else 0,
        },
    }


def _view(state: SimulatorState, batch_id: str) -> BatchView:
    current = state.engine.batch_made_by(batch_id, FACE)
    if current is None:
        raise NotFound(f"Batch {batch_id} not found.", param="batch_id")
    return current


@router.post("/batches")
async def create_batch(request: Request) -> Response:
    state = simulator_state(request)
    engine = state.engine
    openai_face.authorize(request, engine.options.api_key)
    body = await openai_face.json_body(request)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InvalidRequest(f"'name' must be a string of 1 to {MAX_NAME} characters.", param="name")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest("The simulator creates xAI batches from an 'input_file_id' only.", param="input_file_id")
    refusal = openai_face.account_error(engine.options, batch_create=True)
    if refusal is not None:
        raise refusal
    _within_create_rate(state)
    source = state.files.get(file_id)
    if source is None:
        raise NotFound(f"File {file_id} not found.", param="input_file_id")
    requests, issues = await asyncio.to_thread(
        check_input_file, source.path, endpoint=CHAT_ENDPOINT, options=engine.options
    )
    attributes = {"face": FACE, "name": name, "input_file_id": file_id, "endpoint": CHAT_ENDPOINT, "metadata": None}
    no_finalizing = engine.options.updated({"finalizing_s": 0.0})  # xAI: done once nothing is pending
    batch_id = f"batch_{uuid.uuid4()}"
    record = await asyncio.to_thread(engine.create_batch, batch_id, requests, issues, attributes, options=no_finalizing)
    return _json(batch_object(engine.batch(record.id)))


def _within_create_rate(state: SimulatorState) -> None:
    """Count a batch create against the team's rate, or refuse it (429, Retry-After: whole seconds to wait)."""
    interval = state.engine.options.xai_create_interval_s
    now = time.monotonic()
    last = state.last_create.get(FACE)
    if interval and last is not None and now - last < interval:
        wait = interval - (now - last)
        raise UpstreamError(
            429,
            f"Too many batch creations: at most one every {interval:g} s per team. Please retry in {wait:.2f} s.",
            error_type="rate_limit_exceeded",
            code="rate_limit_exceeded",
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )
    state.last_create[FACE] = now


@router.get("/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> Response:
    state = simulator_state(request)
    openai_face.authorize(request, state.engine.options.api_key)
    return _json(batch_object(_view(state, batch_id)))


@router.post("/batches/{batch_id}:cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    state = simulator_state(request)
    openai_face.authorize(request, state.engine.options.api_key)
    _view(state, batch_id)
    return _json(batch_object(openai_face.cancel_or_conflict(state.engine, batch_id)))


def _page(request: Request) -> tuple[int, int]:
    """(limit, offset) from `limit` and `pagination_token` (the simulator's tokens are offsets)."""
    raw_limit = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}.", param="limit")
    token = request.query_params.get("pagination_token") or "0"
    if not token.isdigit():
        raise InvalidRequest("Invalid 'pagination_token'.", param="pagination_token")
    return int(raw_limit), int(token)


def _next_token(offset: int, limit: int, count: int) -> str | None:
    return str(offset + limit) if offset + limit < count else None


@router.get("/batches")
async def list_batches(request: Request) -> Response:
    state = simulator_state(request)
    openai_face.authorize(request, state.engine.options.api_key)
    limit, offset = _page(request)
    ours = [current for current in state.engine.batches_newest_first() if current.record.attributes.get("face") == FACE]
    page = [batch_object(current) for current in ours[offset : offset + limit]]
    return _json({"batches": page, "pagination_token": _next_token(offset, limit, len(ours))})


def _result(line: BatchLine, finished_at: float) -> dict[str, Any]:
    if line.answer is not None:
        body = completion(line.model, line.answer, service_tier="default", created=int(finished_at))
        outcome: dict[str, Any] = {"response": {"chat_get_completion": body}}
    else:
        outcome = {"error": {"code": GRPC_CODES.get(line.status_code, "INTERNAL"), "message": line.error_message}}
    return {"batch_request_id": line.custom_id, "batch_result": outcome}


@router.get("/batches/{batch_id}/results")
async def batch_results(request: Request, batch_id: str) -> Response:
    """The requests finished so far, in finishing order, `limit` per page."""
    state = simulator_state(request)
    openai_face.authorize(request, state.engine.options.api_key)
    current = _view(state, batch_id)
    limit, offset = _page(request)
    start = current.timeline.in_progress_at
    finished = current.finished
    results = [_result(line, start + line.finish_offset) for line in finished[offset : offset + limit]]
    return _json({"results": results, "pagination_token": _next_token(offset, limit, len(finished))})
