"""The Mistral face, under `/mistral/v1`: chat completions, files and batch jobs (`/batch/jobs`), over the same
engine as the other faces (answers, tokens, lifecycle, injected line errors, expiry, cancel, the ledger).

Shapes as proxy/providers/mistral_batch.py documents them (docs.mistral.ai batch guide, the mistralai SDK's
BatchJobIn / BatchJobOut): input lines `{"custom_id", "body"}` with the model set on the job; statuses QUEUED,
RUNNING, SUCCESS, FAILED, TIMEOUT_EXCEEDED, CANCELLATION_REQUESTED, CANCELLED; output and error files of
OpenAI-shaped lines; paged listing (`page`, `page_size`, `total`). An input that does not parse (a line that is
not a JSON object, a missing or duplicate custom_id) fails the job; a body the chat endpoint refuses is that
line's 400. The job's `timeout_hours` is checked, but the simulated timeout is the `expiry_s` knob.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from proxy.errors import InvalidRequest, NotFound
from proxy.simulator import openai_face
from proxy.simulator.batches import INFINITY, BatchView, LineRequest, Status, ValidationIssue
from proxy.simulator.openai_batches import CHAT_ENDPOINT
from proxy.simulator.openai_chat import chat_problem
from proxy.simulator.options import SimulatorOptions
from proxy.simulator.state import SimulatorState, simulator_state

FACE = "mistral"
MAX_TIMEOUT_HOURS = 168  # the simulator's bound on `timeout_hours` (7 days)
MAX_PAGE_SIZE = 1000
STATUSES = {
    Status.VALIDATING: "QUEUED",
    Status.IN_PROGRESS: "RUNNING",
    Status.FINALIZING: "RUNNING",
    Status.COMPLETED: "SUCCESS",
    Status.FAILED: "FAILED",
    Status.EXPIRED: "TIMEOUT_EXCEEDED",
    Status.CANCELLING: "CANCELLATION_REQUESTED",
    Status.CANCELLED: "CANCELLED",
}

router = APIRouter(prefix="/mistral/v1")


async def chat(request: Request) -> Response:
    """Mistral's chat completions are OpenAI-shaped; billed under `mistral/<model>`."""
    return await openai_face.chat_completions(request, flavor=FACE)


router.add_api_route("/chat/completions", chat, methods=["POST"])
router.add_api_route("/files", openai_face.upload_file, methods=["POST"])
router.add_api_route("/files/{file_id}", openai_face.retrieve_file, methods=["GET"])
router.add_api_route("/files/{file_id}", openai_face.delete_file, methods=["DELETE"])
router.add_api_route("/files/{file_id}/content", openai_face.file_content, methods=["GET"])


def _job_request(body: Any) -> dict[str, Any]:
    """The attributes of a valid `POST /batch/jobs` body; InvalidRequest naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    files = body.get("input_files")
    if not isinstance(files, list) or not files or not all(isinstance(item, str) and item for item in files):
        raise InvalidRequest("'input_files' must be a non-empty list of file ids.", param="input_files")
    if body.get("endpoint") != CHAT_ENDPOINT:
        raise InvalidRequest(
            f"The simulator supports only endpoint {CHAT_ENDPOINT!r}, got {body.get('endpoint')!r}.", param="endpoint"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    hours = body.get("timeout_hours", 24)
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_TIMEOUT_HOURS:
        message = f"'timeout_hours' must be an integer from 1 to {MAX_TIMEOUT_HOURS}."
        raise InvalidRequest(message, param="timeout_hours")
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values())
    ):
        raise InvalidRequest("'metadata' must be an object of strings.", param="metadata")
    return {
        "face": FACE,
        "endpoint": CHAT_ENDPOINT,
        "input_files": list(files),
        "input_file_id": files[0],
        "model": model,
        "metadata": metadata,
        "timeout_hours": hours,
        "completion_window": f"{hours}h",
    }


def check_input(paths: list[Path], model: str, options: SimulatorOptions) -> tuple[list[LineRequest], list[str]]:
    """Parse the job's input files (blocking: use a thread): the requests, and why the job fails (empty: it runs)."""
    requests: list[LineRequest] = []
    problems: list[str] = []
    seen: set[str] = set()
    for path in paths:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                if len(requests) >= options.max_batch_lines:
                    return [], [f"A job may contain at most {options.max_batch_lines} requests."]
                problem = _line_problem(raw, seen, requests, model)
                if problem:
                    problems.append(f"{path.name} line {number}: {problem}")
    if not requests and not problems:
        problems.append("The input files contain no requests.")
    return requests, problems


def _line_problem(raw: bytes, seen: set[str], requests: list[LineRequest], model: str) -> str | None:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not valid JSON"
    if not isinstance(item, dict) or not isinstance(item.get("body"), dict):
        return "a line is an object with 'custom_id' and 'body'"
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing 'custom_id'"
    if custom_id in seen:
        return f"duplicate custom_id {custom_id!r}"
    seen.add(custom_id)
    body = {**item["body"], "model": model}
    refused = chat_problem(body)
    if refused is None and body.get("stream"):
        refused = ("Streaming is not supported in batch requests.", "stream")
    requests.append(LineRequest.from_body(custom_id, body, refused[0] if refused else None))
    return None


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def _timestamp(moment: float | None) -> int | None:
    return None if moment is None or moment == INFINITY else int(moment)


def job_object(current: BatchView, files: tuple[str | None, str | None]) -> dict[str, Any]:
    """A batch job as Mistral shows it."""
    record, timeline = current.record, current.timeline
    attributes = record.attributes
    total, succeeded, failed = current.counts
    ended = current.seen(timeline.end_at)
    errors = [{"message": issue.message, "count": 1} for issue in record.issues]
    return {
        "id": record.id,
        "object": "batch",
        "input_files": attributes["input_files"],
        "metadata": attributes["metadata"],
        "endpoint": attributes["endpoint"],
        "model": attributes["model"],
        "agent_id": None,
        "output_file": files[0],
        "error_file": files[1],
        "errors": errors,
        "outputs": None,
        "status": STATUSES[current.status],
        "created_at": int(record.created_at),
        "total_requests": total,
        "completed_requests": succeeded + failed,
        "succeeded_requests": succeeded,
        "failed_requests": failed,
        "started_at": _timestamp(current.seen(timeline.in_progress_at)),
        "completed_at": _timestamp(ended),
    }


async def _job_json(state: SimulatorState, current: BatchView) -> dict[str, Any]:
    return job_object(current, await openai_face.result_files(state, current))


def _job(state: SimulatorState, job_id: str) -> BatchView:
    current = state.engine.batch_made_by(job_id, FACE)
    if current is None:
        raise NotFound(f"Batch job {job_id} not found.", param="job_id")
    return current


@router.post("/batch/jobs")
async def create_job(request: Request) -> Response:
    state = simulator_state(request)
    engine = state.engine
    openai_face.authorize(request, engine.options.api_key)
    attributes = _job_request(await openai_face.json_body(request))
    refusal = openai_face.account_error(engine.options, batch_create=True)
    if refusal is not None:
        raise refusal
    paths = []
    for file_id in attributes["input_files"]:
        stored = state.files.get(file_id)
        if stored is None:
            raise NotFound(f"File {file_id} not found.", param="input_files")
        paths.append(stored.path)
    requests, problems = await asyncio.to_thread(check_input, paths, attributes["model"], engine.options)
    issues = [ValidationIssue("invalid_input", problem) for problem in problems]
    job_id = str(uuid.uuid4())
    record = await asyncio.to_thread(engine.create_batch, job_id, requests if not issues else [], issues, attributes)
    return _json(await _job_json(state, engine.batch(record.id)))


@router.get("/batch/jobs/{job_id}")
async def retrieve_job(request: Request, job_id: str) -> Response:
    state = simulator_state(request)
    openai_face.authorize(request, state.engine.options.api_key)
    return _json(await _job_json(state, _job(state, job_id)))


@router.post("/batch/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> Response:
    state = simulator_state(request)
    openai_face.authorize(request, state.engine.options.api_key)
    _job(state, job_id)
    return _json(await _job_json(state, openai_face.cancel_or_conflict(state.engine, job_id)))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}.", param=name)
    return int(raw)


def _created_after(raw: str | None) -> float:
    if raw is None:
        return 0.0
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest("'created_after' must be an ISO 8601 date-time.", param="created_after") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@router.get("/batch/jobs")
async def list_jobs(request: Request) -> Response:
    """Jobs newest first, `page_size` per `page` (0-based), created at or after `created_after` (ISO 8601) when
    given, with the `total` across pages."""
    state = simulator_state(request)
    openai_face.authorize(request, state.engine.options.api_key)
    page = _int_param(request, "page", 0, 0, 1_000_000)
    size = _int_param(request, "page_size", 100, 1, MAX_PAGE_SIZE)
    after = _created_after(request.query_params.get("created_after"))
    jobs = [
        current
        for current in state.engine.batches_newest_first()
        if current.record.attributes.get("face") == FACE and current.record.created_at >= after
    ]
    data = [await _job_json(state, current) for current in jobs[page * size : (page + 1) * size]]
    return _json({"data": data, "object": "list", "total": len(jobs)})
