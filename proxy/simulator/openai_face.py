"""The OpenAI face: `/v1/chat/completions`, `/v1/files`, `/v1/batches`, translated to and from the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from proxy.errors import ApiError, Conflict, InvalidRequest, NotFound, Unauthorized
from proxy.simulator.answers import answer_for
from proxy.simulator.batches import BatchView
from proxy.simulator.engine import BatchNotCancellable, BatchNotFound, Fault
from proxy.simulator.files import FileRecord, expiry_seconds, new_file_id
from proxy.simulator.ledger import Tier
from proxy.simulator.openai_batches import CHAT_ENDPOINT, batch_object, check_input_file, result_lines
from proxy.simulator.openai_chat import chat_problem, completion, response_tier, sse_events
from proxy.simulator.state import ResultFiles, SimulatorState, simulator_state
from proxy.simulator.uploads import receive_upload

JSON = "application/json"
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
DEFAULT_PAGE = 20
MAX_PAGE = 100
COMPLETION_WINDOWS = frozenset({"24h"})  # the only window OpenAI accepts


class ProviderError(ApiError):
    """An error the simulated provider answers with (injected faults), any status."""

    def __init__(self, status: int, message: str, *, error_type: str, code: str | None, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        self.status = status
        self.error_type = error_type


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON)


def authorize(request: Request, api_key: str | None) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code=None,
        )
    if api_key is not None and key.strip() != api_key:
        shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
        raise Unauthorized(f"Incorrect API key provided: {shown}.")


def fault_error(fault: Fault, model: str, retry_after_s: int) -> ProviderError:
    retry = {"Retry-After": str(retry_after_s), "retry-after-ms": str(retry_after_s * 1000)}
    if fault.reason == "resource_unavailable":
        return ProviderError(
            429,
            "Resource unavailable: flex processing has no capacity right now. Please retry later.",
            error_type="resource_unavailable",
            code="resource_unavailable",
            headers=retry,
        )
    if fault.status == 429:
        return ProviderError(
            429,
            f"Rate limit reached for {model} (simulated). Please try again in {retry_after_s}s.",
            error_type="requests",
            code="rate_limit_exceeded",
            headers=retry,
        )
    return ProviderError(
        fault.status,
        "The server had an error while processing your request. Sorry about that!",
        error_type="server_error" if fault.status >= 500 else "invalid_request_error",
        code=None,
    )


async def json_body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload."
        ) from exc


router = APIRouter(prefix="/v1")


# registered as a plain Starlette route by app.py (FastAPI dependency resolution costs ~40 us per call)
async def chat_completions(request: Request) -> Response:
    state = simulator_state(request)
    engine = state.engine
    opts = engine.options
    authorize(request, opts.api_key)
    body = await json_body(request)
    problem = chat_problem(body)
    if problem:
        raise InvalidRequest(problem[0], param=problem[1])
    tier = Tier.FLEX if body.get("service_tier") == "flex" else Tier.SYNC
    fault = engine.sync_fault(tier)
    if fault is not None:
        rate_headers = state.rates.note(requests=0, tokens=0).openai_headers()
        if fault.body is not None:
            return Response(fault.body, status_code=fault.status, media_type="text/html", headers=rate_headers)
        error = fault_error(fault, body["model"], opts.retry_after_s)
        error.headers = {**rate_headers, **error.headers}
        raise error
    delay = opts.sync_latency_s + (opts.flex_latency_s if tier is Tier.FLEX else 0.0)
    if delay:
        await asyncio.sleep(delay)
    answer = answer_for(body)
    engine.bill(body["model"], tier, answer)
    headers = state.rates.note(requests=1, tokens=answer.total_tokens).openai_headers()
    if body.get("stream"):
        events = sse_events(body, answer, chunk_chars=opts.stream_chunk_chars)
        return StreamingResponse(_aiter(events), media_type="text/event-stream", headers=headers)
    payload = orjson.dumps(completion(body["model"], answer, service_tier=response_tier(body)))
    return Response(payload, media_type=JSON, headers=headers)


async def _aiter(events: Any) -> AsyncIterator[bytes]:
    for event in events:
        yield event


# files


def _file(state: SimulatorState, file_id: str) -> FileRecord:
    record = state.files.get(file_id)
    if record is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return record


@router.post("/files")
async def upload_file(request: Request) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    file_id = new_file_id()
    path = state.files.new_path(file_id)
    try:
        upload = await receive_upload(
            request.headers.get("content-type"),
            request.stream(),
            path,
            max_bytes=state.engine.options.max_file_bytes,
        )
        purpose = upload.fields.get("purpose")
        if not purpose:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        if purpose != "batch":
            raise InvalidRequest(f"The simulator only accepts purpose 'batch', got {purpose!r}.", param="purpose")
        if upload.filename is None:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        expires_after = _expiry(
            upload.fields.get("expires_after[anchor]"), upload.fields.get("expires_after[seconds]"), "expires_after"
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    record = state.files.register(file_id, filename=upload.filename, purpose=purpose, expires_after=expires_after)
    return _json(record.as_openai())


def _expiry(anchor: Any, seconds: Any, param: str) -> int | None:
    try:
        return expiry_seconds(anchor, seconds, param=param)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from None


@router.get("/files")
async def list_files(request: Request) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    data = [record.as_openai() for record in reversed(state.files.all())]
    return _json({"object": "list", "data": data, "has_more": False})


@router.get("/files/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    return _json(_file(state, file_id).as_openai())


@router.delete("/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    _file(state, file_id)
    state.files.delete(file_id)
    return _json({"id": file_id, "object": "file", "deleted": True})


@router.get("/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    return FileResponse(_file(state, file_id).path, media_type="application/octet-stream")


# batches


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise InvalidRequest(f"'metadata' must be an object of at most {MAX_METADATA_PAIRS} pairs.", param="metadata")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY or not isinstance(item, str) or len(item) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"'metadata' keys are at most {MAX_METADATA_KEY} characters and values strings of at most "
                f"{MAX_METADATA_VALUE}.",
                param="metadata",
            )
    return dict(value)


def _batch_request(body: Any) -> tuple[str, str, str, dict[str, str] | None]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for key in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise InvalidRequest(f"Missing required parameter: '{key}'.", param=key)
    if body["endpoint"] != CHAT_ENDPOINT:
        raise InvalidRequest(
            f"The simulator supports only endpoint {CHAT_ENDPOINT!r}, got {body['endpoint']!r}.",
            param="endpoint",
        )
    if body["completion_window"] not in COMPLETION_WINDOWS:
        raise InvalidRequest(
            f"Invalid value for 'completion_window': {body['completion_window']!r}. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    return body["input_file_id"], body["endpoint"], body["completion_window"], _metadata(body.get("metadata"))


@router.post("/batches")
async def create_batch(request: Request) -> Response:
    state = simulator_state(request)
    engine = state.engine
    authorize(request, engine.options.api_key)
    body = await json_body(request)
    input_file_id, endpoint, window, metadata = _batch_request(body)
    source = _file(state, input_file_id)
    if source.purpose != "batch":
        raise InvalidRequest(f"File {input_file_id} does not have purpose 'batch'.", param="input_file_id")
    requests, issues = await asyncio.to_thread(
        check_input_file, source.path, endpoint=endpoint, max_lines=engine.options.max_batch_lines
    )
    output_expiry = body.get("output_expires_after")
    attributes = {
        "endpoint": endpoint,
        "input_file_id": input_file_id,
        "completion_window": window,
        "metadata": metadata,
        "output_expires_after": _expiry(
            output_expiry.get("anchor") if isinstance(output_expiry, dict) else output_expiry,
            output_expiry.get("seconds") if isinstance(output_expiry, dict) else None,
            "output_expires_after",
        ),
    }
    batch_id = f"batch_{new_file_id().removeprefix('file-')}"
    record = await asyncio.to_thread(engine.create_batch, batch_id, requests, issues, attributes)
    return _json(await _batch_json(state, engine.batch(record.id)))


async def _result_files(state: SimulatorState, current: BatchView) -> ResultFiles:
    """The output and error files of an ended batch, written the first time anyone looks."""
    if not current.status.is_terminal:
        return None, None
    batch_id = current.record.id
    async with state.result_files_lock:
        if batch_id not in state.result_files:
            state.result_files[batch_id] = await asyncio.to_thread(_write_result_files, state, current)
    return state.result_files[batch_id]


def _write_result_files(state: SimulatorState, current: BatchView) -> ResultFiles:
    batch_id = current.record.id
    expiry = current.record.attributes.get("output_expires_after")
    output = state.files.writer(filename=f"{batch_id}_output.jsonl", purpose="batch_output", expires_after=expiry)
    errors = state.files.writer(filename=f"{batch_id}_error.jsonl", purpose="batch_output", expires_after=expiry)
    try:
        for to_error_file, raw in result_lines(current):
            (errors if to_error_file else output).write(raw)
    finally:
        output_id, errors_id = output.finish(), errors.finish()
    return output_id, errors_id


async def _batch_json(state: SimulatorState, current: BatchView) -> dict[str, Any]:
    return batch_object(current, await _result_files(state, current))


def _view(state: SimulatorState, batch_id: str) -> BatchView:
    try:
        return state.engine.batch(batch_id)
    except BatchNotFound as exc:
        raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id") from exc


@router.get("/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    return _json(await _batch_json(state, _view(state, batch_id)))


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    _view(state, batch_id)
    try:
        current = state.engine.cancel_batch(batch_id)
    except BatchNotCancellable as exc:
        raise Conflict(str(exc)) from exc
    return _json(await _batch_json(state, current))


def _page_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}.", param="limit")
    return int(raw)


@router.get("/batches")
async def list_batches(request: Request) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    limit = _page_limit(request.query_params.get("limit"))
    after = request.query_params.get("after")
    page: list[BatchView] = []
    has_more = False
    skipping = after is not None
    for current in state.engine.batches_newest_first():
        if current.record.attributes.get("face") == "anthropic":
            continue  # Message Batches are listed by the Anthropic face, as the real providers keep them apart
        if skipping:
            skipping = current.record.id != after
            continue
        if len(page) == limit:
            has_more = True
            break
        page.append(current)
    data = [await _batch_json(state, current) for current in page]
    return _json(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )
