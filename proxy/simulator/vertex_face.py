"""The Vertex AI face: batch prediction jobs for Gemini models (`/v1/projects/{p}/locations/{l}/
batchPredictionJobs`: create, get, list, `:cancel`), reading inputs from and writing outputs to a real
GCS-compatible server (the `gcs_url` knob: its JSON API root), and the sync lane litellm's `vertex_ai` calls
(`.../publishers/google/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`, answered as the Gemini
face answers them), over the provider-neutral engine.

As strict as the real API where batchgate depends on it: `Authorization: Bearer <token>` (none: 401
UNAUTHENTICATED; a wrong one when the `api_key` knob is set: 401 too; one the simulator's STS endpoint issued is
accepted until it expires, then 401, google_oauth.py), Google's error shape, `instancesFormat` and
`predictionsFormat` `jsonl` with `gs://` URIs, a model `publishers/google/models/<gemini model>` the price map knows
(else 404 NOT_FOUND), an input object that exists and an output bucket that exists (else 400). Each input line is
`{"request": GenerateContentRequest}` (Vertex's fields, `labels` included); an invalid request fails its own row.
Once the job has ended (succeeded, cancelled or expired: the rows that finished), `{prefix}/prediction-model-<time>/
predictions.jsonl` holds one `{"status", "processed_time", "request", "response"}` row per finished request, the
request echoed, a failed row's `status` naming the error. Rows bill `vertex_ai/<model>` at the batch price.
"""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
from fastapi import APIRouter, Depends, Request, Response

from proxy.simulator.answers import answer_for
from proxy.simulator.batches import BatchLine, BatchView, LineRequest, Status
from proxy.simulator.engine import BatchNotCancellable
from proxy.simulator.gemini_face import (
    REQUEST_FIELDS,
    GoogleError,
    chat_body,
    error,
    generate,
    generate_response,
    lenient_mapping,
    request_problem,
)
from proxy.simulator.ledger import Tier
from proxy.simulator.state import SimulatorState, simulator_state

JSON = "application/json"
BATCH_PREFIX = "vtxbatch-"
JOBS = "/v1/projects/{project}/locations/{location}/batchPredictionJobs"
# what litellm's `vertex_ai/gemini-*` sync lane calls (v1beta1 for its preview features)
MODELS = "/{version}/projects/{project}/locations/{location}/publishers/google/models/{target}"
VERTEX_REQUEST_FIELDS = REQUEST_FIELDS | {"labels"}
MODEL_PATH = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/(?P<model>[A-Za-z0-9._-]+)$")
DISPLAY_FILTER = re.compile(r'^\s*display_name\s*=\s*"(?P<name>[^"]*)"\s*$')
MAX_PAGE = 1000
STATES = {
    Status.VALIDATING: "JOB_STATE_PENDING",
    Status.IN_PROGRESS: "JOB_STATE_RUNNING",
    Status.FINALIZING: "JOB_STATE_RUNNING",
    Status.CANCELLING: "JOB_STATE_CANCELLING",
    Status.COMPLETED: "JOB_STATE_SUCCEEDED",
    Status.FAILED: "JOB_STATE_FAILED",
    Status.EXPIRED: "JOB_STATE_EXPIRED",
    Status.CANCELLED: "JOB_STATE_CANCELLED",
}
REASONS = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}

router = APIRouter()


def authorized_state(request: Request) -> SimulatorState:
    """The simulator's state for a call with an accepted bearer token; GoogleError (401) otherwise."""
    state = simulator_state(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GoogleError(
            error(401, "Request is missing required authentication credential. Expected OAuth 2 access token.")
        )
    live = state.google_tokens.state_of(token.strip())
    if live is False:
        raise GoogleError(
            error(401, "Request had invalid authentication credentials. The access token has expired.",
                  reason="ACCESS_TOKEN_EXPIRED")
        )  # fmt: skip
    expected = state.engine.options.api_key
    if live is None and expected is not None and token.strip() != expected:
        raise GoogleError(
            error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                reason="ACCESS_TOKEN_TYPE_UNSUPPORTED",
            )
        )
    return state


Authorized = Annotated[SimulatorState, Depends(authorized_state)]


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


# generateContent


@router.post(MODELS)
async def models_call(request: Request, version: str, target: str, state: Authorized) -> Response:
    """`:generateContent`, or `:streamGenerateContent` (`?alt=sse`: server-sent events), as Gemini's face answers
    them, billed as `vertex_ai/<model>` at the list price."""
    name, _, method = target.partition(":")
    if version not in ("v1", "v1beta1") or method not in ("generateContent", "streamGenerateContent"):
        return error(404, f"Method {method!r} not found for publishers/google/models/{name}.")
    model = _model(state, f"publishers/google/models/{name}")
    if model is None:
        return error(404, f"Publisher Model `publishers/google/models/{name}` not found.")
    stream = method == "streamGenerateContent"
    return await generate(request, state, model, stream=stream, provider="vertex_ai", fields=VERTEX_REQUEST_FIELDS)


# GCS, through the server at the `gcs_url` knob


class GcsProblem(Exception):
    """The storage server refused or lacks an object or bucket (`str()` is Vertex's 400 message)."""


def _gs(uri: Any) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise GcsProblem(f"Invalid Cloud Storage URI {uri!r}: expected gs://bucket/object.")
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise GcsProblem(f"Invalid Cloud Storage URI {uri!r}: no bucket.")
    return bucket, name


def _storage(state: SimulatorState) -> httpx.AsyncClient:
    root = state.engine.options.gcs_url
    if not root:
        raise GcsProblem("The simulated Vertex AI has no Cloud Storage: start it with --gcs-url.")
    return httpx.AsyncClient(base_url=root.rstrip("/"), timeout=30)


async def _read_object(state: SimulatorState, uri: str) -> bytes:
    bucket, name = _gs(uri)
    async with _storage(state) as gcs:
        response = await gcs.get(
            f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}", params={"alt": "media"}
        )
    if response.status_code != 200:
        raise GcsProblem(f"Failed to read the input {uri}: {response.status_code} (no such bucket or object).")
    return response.content


async def _check_bucket(state: SimulatorState, uri: str) -> None:
    bucket, _ = _gs(uri)
    async with _storage(state) as gcs:
        response = await gcs.get(f"/storage/v1/b/{quote(bucket, safe='')}")
    if response.status_code != 200:
        raise GcsProblem(f"The output bucket {bucket} does not exist or cannot be written.")


async def _write_object(state: SimulatorState, bucket: str, name: str, content: bytes) -> None:
    async with _storage(state) as gcs:
        response = await gcs.post(
            f"/upload/storage/v1/b/{quote(bucket, safe='')}/o",
            params={"uploadType": "media", "name": name},
            content=content,
            headers={"content-type": "application/octet-stream"},
        )
    response.raise_for_status()


# jobs


def _rows(content: bytes) -> list[Any]:
    rows = []
    for raw in content.splitlines():
        if raw.strip():
            try:
                rows.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                rows.append(None)
    return rows


def _line_requests(rows: list[Any], model: str) -> list[LineRequest]:
    """Each row answered; a row that is not `{"request": valid GenerateContentRequest}` fails alone (400)."""
    parsed = []
    for index, row in enumerate(rows):
        request = lenient_mapping(row).get("request")
        problem = request_problem(request, VERTEX_REQUEST_FIELDS) if isinstance(row, dict) else "Invalid JSON."
        answer = answer_for(chat_body(request, model)) if problem is None and isinstance(request, dict) else None
        parsed.append(LineRequest(str(index), f"vertex_ai/{model}", answer, problem))
    return parsed


def _model(state: SimulatorState, path: Any) -> str | None:
    """The Gemini model a `publishers/google/models/...` path names, when the price map knows it."""
    found = MODEL_PATH.match(path) if isinstance(path, str) else None
    if found is None or not found["model"].startswith("gemini"):
        return None
    return found["model"] if state.engine.prices.price(f"vertex_ai/{found['model']}", Tier.SYNC) else None


class Refused(Exception):
    """A create call refused (`response` is the Google error answer)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _job_request(state: SimulatorState, payload: dict[str, Any]) -> tuple[str, str, list[Any], str]:
    """(display name, model, input URIs, output prefix) of a create call; Refused when the API would refuse it."""
    display = payload.get("displayName")
    if not isinstance(display, str) or not display:
        message = (
            "List of found errors:\t1.Field: batch_prediction_job.display_name; Message: Required field is not set."
        )
        raise Refused(error(400, message))
    model = _model(state, payload.get("model"))
    if model is None:
        raise Refused(error(404, f"Publisher Model `{payload.get('model')}` not found."))
    inputs = lenient_mapping(payload.get("inputConfig"))
    outputs = lenient_mapping(payload.get("outputConfig"))
    uris = lenient_mapping(inputs.get("gcsSource")).get("uris")
    prefix = lenient_mapping(outputs.get("gcsDestination")).get("outputUriPrefix")
    if inputs.get("instancesFormat") != "jsonl" or not isinstance(uris, list) or not uris:
        raise Refused(error(400, "inputConfig: instancesFormat must be jsonl with gcsSource.uris for Gemini models."))
    if outputs.get("predictionsFormat") != "jsonl" or not isinstance(prefix, str):
        raise Refused(error(400, "outputConfig: predictionsFormat must be jsonl with gcsDestination.outputUriPrefix."))
    return display, model, uris, prefix


@router.post(JOBS)
async def create_job(request: Request, project: str, location: str, state: Authorized) -> Response:
    try:
        payload = lenient_mapping(orjson.loads(await request.body()))
        display, model, uris, prefix = _job_request(state, payload)
        await _check_bucket(state, prefix)
        contents = [await _read_object(state, uri) for uri in uris]
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    except Refused as exc:
        return exc.response
    except GcsProblem as exc:
        return error(400, str(exc))
    rows = [row for content in contents for row in _rows(content)]
    if not rows:
        return error(400, f"The input {uris[0]} has no requests.")
    requests = await asyncio.to_thread(_line_requests, rows, model)
    attributes = {
        "face": "vertex", "endpoint": "/v1/chat/completions", "input_file_id": None, "completion_window": "24h",
        "metadata": None, "display_name": display, "model": model, "model_path": payload["model"],
        "parent": f"projects/{project}/locations/{location}", "input_config": payload["inputConfig"],
        "output_config": payload["outputConfig"], "labels": lenient_mapping(payload.get("labels")),
        "requests": [lenient_mapping(row).get("request") for row in rows],
    }  # fmt: skip
    engine = state.engine
    job_id = f"{BATCH_PREFIX}{random.randrange(10**18, 10**19)}"  # Vertex's job ids are 19 digits
    record = await asyncio.to_thread(engine.create_batch, job_id, requests, [], attributes)
    return _json(await job_body(state, engine.batch(record.id)))


def _stats(current: BatchView) -> dict[str, str]:
    succeeded = sum(1 for line in current.finished if line.succeeded)
    counts = {
        "successfulCount": succeeded,
        "failedCount": len(current.finished) - succeeded,
        "incompleteCount": len(current.record.lines) - len(current.finished) if current.status.is_terminal else 0,
    }
    return {name: str(value) for name, value in counts.items() if value}  # proto JSON leaves zeros out


def _row(line: BatchLine, request: Any, model: str, processed: str | None) -> dict[str, Any]:
    if line.answer is not None:
        return {"status": "", "processed_time": processed, "request": request,
                "response": generate_response(line.answer, model)}  # fmt: skip
    status = line.status_code or 500
    google = {"error": {"code": status, "message": line.error_message or "", "status": None}}
    return {"status": f"{REASONS.get(status, 'Error')}: {orjson.dumps(google).decode()}", "processed_time": processed,
            "request": request}  # fmt: skip


async def _output_directory(state: SimulatorState, current: BatchView) -> str:
    """The job's output directory, its predictions written once (when the job has ended)."""
    record = current.record
    async with state.result_files_lock:
        written = state.result_files.get(record.id)
        if written is not None and written[0] is not None:
            return written[0]
        prefix = record.attributes["output_config"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
        stamp = datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        directory = f"{prefix}/prediction-model-{stamp}"
        requests, model = record.attributes["requests"], record.attributes["model"]
        processed = _iso(current.now)
        rows = [
            orjson.dumps(_row(line, requests[line.index], model, processed))
            for line in sorted(current.finished, key=lambda line: line.index)
        ]
        bucket, name = _gs(directory + "/predictions.jsonl")
        await _write_object(state, bucket, name, b"\n".join(rows) + b"\n" if rows else b"")
        state.result_files[record.id] = (directory, None)
        return directory


async def job_body(state: SimulatorState, current: BatchView) -> dict[str, Any]:
    """A job as `batchPredictionJobs.get` answers it."""
    record = current.record
    attributes = record.attributes
    status = current.status
    job: dict[str, Any] = {
        "name": f"{attributes['parent']}/batchPredictionJobs/{record.id.removeprefix(BATCH_PREFIX)}",
        "displayName": attributes["display_name"],
        "model": attributes["model_path"],
        "inputConfig": attributes["input_config"],
        "outputConfig": attributes["output_config"],
        "state": STATES[status],
        "createTime": _iso(record.created_at),
        "updateTime": _iso(current.now),
    }
    if attributes["labels"]:
        job["labels"] = attributes["labels"]
    stats = _stats(current)
    if stats:
        job["completionStats"] = stats
    if not status.is_terminal:
        return job
    job["endTime"] = _iso(current.timeline.end_at)
    if status is Status.FAILED:
        job["error"] = {"code": 3, "message": "The batch prediction job failed validation."}
        return job
    job["outputInfo"] = {"gcsOutputDirectory": await _output_directory(state, current)}
    return job


def _view(state: SimulatorState, project: str, location: str, job_id: str) -> BatchView | None:
    current = state.engine.batch_of_face(BATCH_PREFIX + job_id, BATCH_PREFIX)
    if current is None or current.record.attributes["parent"] != f"projects/{project}/locations/{location}":
        return None
    return current


def _not_found(project: str, location: str, job_id: str) -> Response:
    return error(404, f"The BatchPredictionJob projects/{project}/locations/{location}/batchPredictionJobs/{job_id} "
                      "does not exist.")  # fmt: skip


@router.get(JOBS + "/{job_id}")
async def get_job(project: str, location: str, job_id: str, state: Authorized) -> Response:
    current = _view(state, project, location, job_id)
    if current is None:
        return _not_found(project, location, job_id)
    return _json(await job_body(state, current))


@router.post(JOBS + "/{target}")
async def job_action(project: str, location: str, target: str, state: Authorized) -> Response:
    job_id, _, method = target.partition(":")
    if method != "cancel":
        return error(404, f"Method {method!r} not found for batchPredictionJobs.")
    if _view(state, project, location, job_id) is None:
        return _not_found(project, location, job_id)
    try:
        state.engine.cancel_batch(BATCH_PREFIX + job_id)
    except BatchNotCancellable:
        return error(400, f"The BatchPredictionJob {job_id} has ended and cannot be cancelled.")
    return _json({})


@router.get(JOBS)
async def list_jobs(request: Request, project: str, location: str, state: Authorized) -> Response:
    raw_size = request.query_params.get("pageSize", "100")
    raw_token = request.query_params.get("pageToken", "0")
    if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE or not raw_token.isdigit():
        return error(400, f"pageSize must be from 1 to {MAX_PAGE}; pageToken must come from a listing.")
    wanted: str | None = None
    raw_filter = request.query_params.get("filter", "")
    if raw_filter:
        found = DISPLAY_FILTER.match(raw_filter)
        if found is None:
            return error(400, f"Unsupported filter: {raw_filter}")
        wanted = found["name"]
    parent = f"projects/{project}/locations/{location}"
    ours = [
        current
        for current in state.engine.batches_newest_first()
        if current.record.id.startswith(BATCH_PREFIX)
        and current.record.attributes["parent"] == parent
        and wanted in (None, current.record.attributes["display_name"])
    ]
    size, start = int(raw_size), int(raw_token)
    body: dict[str, Any] = {
        "batchPredictionJobs": [await job_body(state, current) for current in ours[start : start + size]]
    }
    if start + size < len(ours):
        body["nextPageToken"] = str(start + size)
    return _json(body)
