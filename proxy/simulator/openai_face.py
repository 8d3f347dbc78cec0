"""The OpenAI face: `/v1/chat/completions`, `/v1/files`, `/v1/batches`, translated to and from the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from proxy.errors import ApiError, Conflict, InvalidRequest, NotFound, Unauthorized
from proxy.simulator import azure_auth
from proxy.simulator.answers import answer_for
from proxy.simulator.batches import BatchView
from proxy.simulator.embeddings import AZURE_ENDPOINT as AZURE_EMBEDDINGS_ENDPOINT
from proxy.simulator.embeddings import ENDPOINT as EMBEDDINGS_ENDPOINT
from proxy.simulator.embeddings import embedding_answer, embedding_problem, embedding_response
from proxy.simulator.engine import BatchNotCancellable, BatchNotFound, Engine, Fault, TokenLimitExceeded
from proxy.simulator.files import FILE_TTL_S, FileRecord, expires_after_seconds, new_file_id
from proxy.simulator.ledger import Tier
from proxy.simulator.openai_batches import (
    AZURE_CHAT_ENDPOINT,
    CHAT_ENDPOINT,
    azure_batch_object,
    batch_object,
    check_input_file,
    result_lines,
)
from proxy.simulator.openai_chat import (
    chat_problem,
    compatible_server_events,
    completion,
    response_tier,
    sse_events,
    store_problem,
    with_compatible_server_nulls,
)
from proxy.simulator.options import Flavor, SimulatorOptions
from proxy.simulator.responses import ENDPOINT as RESPONSES_ENDPOINT
from proxy.simulator.state import ResultFiles, SimulatorState, simulator_state
from proxy.simulator.tool_use import last_user_text
from proxy.simulator.uploads import receive_upload

JSON = "application/json"
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
DEFAULT_PAGE = 20
MAX_PAGE = 100
COMPLETION_WINDOWS = frozenset({"24h"})  # the only window OpenAI (and Azure) accept
GROQ_WINDOW_HOURS = (24, 7 * 24)  # Groq accepts 24h to 7d
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)

# OpenAI's answer to a restricted key without the scope a call needs (403, `code` null)
FILES_READ_FORBIDDEN = (
    "You have insufficient permissions for this operation. Missing scopes: api.files.read. Check that you have the "
    "correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a "
    "restricted API key, that it has the necessary scopes."
)


class ProviderError(ApiError):
    """An error the simulated provider answers with (injected faults), any status."""

    def __init__(self, status: int, message: str, *, error_type: str, code: str | None, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        self.status = status
        self.error_type = error_type


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON)


def authorize(request: Request, api_key: str | None) -> None:
    if azure_auth.is_azure(request):
        azure_auth.authorize(request, api_key, ad_token=simulator_state(request).engine.options.azure_ad_token)
        return
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


def quota_error() -> ProviderError:
    """OpenAI's answer when the account has no quota left: a 429 that is not a rate limit (no Retry-After)."""
    return ProviderError(429, QUOTA_MESSAGE, error_type="insufficient_quota", code="insufficient_quota")


def account_error(opts: SimulatorOptions, *, batch_create: bool = False) -> ProviderError | None:
    """The refusal an account in bad standing meets: every chat call and every batch create, until cleared."""
    if batch_create and opts.billing_hard_limit_reached:
        return ProviderError(
            400,
            "Billing hard limit has been reached",
            error_type="invalid_request_error",
            code="billing_hard_limit_reached",
        )
    if opts.insufficient_quota or opts.billing_hard_limit_reached:
        return quota_error()
    return None


def flavor_of(request: Request, opts: SimulatorOptions) -> Flavor:
    """The provider a request plays: Azure at Azure's paths, else the face's configured flavour."""
    return "azure" if azure_auth.is_azure(request) else opts.flavor


def check_call(opts: SimulatorOptions, problem: tuple[str, str | None] | None) -> None:
    """The first refusals of a synchronous call, in the provider's order: the body's problem (400 naming the
    param), then the account's standing."""
    if problem:
        raise InvalidRequest(problem[0], param=problem[1])
    refusal = account_error(opts)
    if refusal is not None:
        raise refusal


def admit_sync_call(engine: Engine, body: dict[str, Any], problem: tuple[str, str | None] | None) -> None:
    """`check_call`, then an injected fault of the sync tier (raised as its ProviderError)."""
    check_call(engine.options, problem)
    fault = engine.sync_fault(Tier.SYNC)
    if fault is not None:
        raise fault_error(fault, body["model"], engine.options.retry_after_s)


def cancel_or_conflict(engine: Engine, batch_id: str) -> BatchView:
    """Cancel the batch; 409 (the OpenAI family's answer) when it has already ended."""
    try:
        return engine.cancel_batch(batch_id)
    except BatchNotCancellable as exc:
        raise Conflict(str(exc)) from exc


async def json_body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload."
        ) from exc


router = APIRouter()  # mounted at /v1 (OpenAI) and at Azure's /openai/v1 and /openai (proxy/simulator/app.py)


# registered as a plain Starlette route by app.py (FastAPI dependency resolution costs ~40 us per call)
async def chat_completions(request: Request, flavor: str | None = None) -> Response:
    """`flavor`: the provider a face plays, which names the billed model (None: the OpenAI face's flavour)."""
    state = simulator_state(request)
    engine = state.engine
    opts = engine.options
    authorize(request, opts.api_key)
    body = await json_body(request)
    deployment = request.path_params.get("deployment")
    if deployment is not None and isinstance(body, dict):  # Azure's legacy path names the deployment
        body["model"] = deployment
    share = engine.venue_share(body) if isinstance(body, dict) else None
    check_call(opts, chat_problem(body) or (store_problem(body) if opts.metadata_requires_store else None))
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
        label = last_user_text(body.get("messages"))
        state.in_flight[label] += 1
        try:
            await asyncio.sleep(delay)
        finally:
            state.in_flight[label] -= 1
    answer = answer_for(body)
    if azure_auth.is_azure(request):
        engine.bill(azure_billed_name(body["model"], opts), tier, answer, share=share)
    else:
        engine.bill(body["model"], tier, answer, flavor=flavor or opts.flavor, share=share)
    headers = state.rates.note(requests=1, tokens=answer.total_tokens).openai_headers()
    if body.get("stream"):
        events = sse_events(body, answer, chunk_chars=opts.stream_chunk_chars)
        if opts.compatible_server_nulls:
            events = compatible_server_events(events)
        return StreamingResponse(aiter_events(events), media_type="text/event-stream", headers=headers)
    completed = completion(body["model"], answer, service_tier=response_tier(body))
    if opts.compatible_server_nulls:
        completed = with_compatible_server_nulls(completed)
    return Response(orjson.dumps(completed), media_type=JSON, headers=headers)


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    """`/v1/embeddings` (and Azure's, where the legacy path names the deployment): deterministic vectors, usage =
    the inputs' tokens, billed at list price (sync tier)."""
    state = simulator_state(request)
    engine = state.engine
    opts = engine.options
    authorize(request, opts.api_key)
    body = await json_body(request)
    deployment = request.path_params.get("deployment")
    if deployment is not None and isinstance(body, dict):  # Azure's legacy path names the deployment
        body["model"] = deployment
    admit_sync_call(engine, body, embedding_problem(body))
    answer = embedding_answer(body)
    if azure_auth.is_azure(request):
        engine.bill(azure_billed_name(body["model"], opts), Tier.SYNC, answer)
    else:
        engine.bill(body["model"], Tier.SYNC, answer, flavor=opts.flavor)
    headers = state.rates.note(requests=1, tokens=answer.total_tokens).openai_headers()
    return Response(orjson.dumps(embedding_response(body["model"], answer)), media_type=JSON, headers=headers)


async def aiter_events(events: Any) -> AsyncIterator[bytes]:
    """Server-sent events from an iterator of them (the responses face streams the same way)."""
    for event in events:
        yield event


# files


def _file(state: SimulatorState, file_id: str) -> FileRecord:
    record = state.files.get(file_id)
    if record is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return record


def azure_billed_name(deployment: str, opts: SimulatorOptions) -> str:
    """The price-map name Azure bills a deployment's work under: `azure/<the model it serves>`."""
    return f"azure/{opts.azure_deployments.get(deployment, deployment)}"


def _file_json(record: FileRecord, flavor: Flavor) -> dict[str, Any]:
    """A file object; Azure files without an explicit expiry never expire (`expires_at: null`)."""
    return record.as_openai(None if flavor == "azure" else FILE_TTL_S)


def _upload_expiry(fields: dict[str, str], *, azure_range: bool) -> int | None:
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    try:
        accepted = expires_after_seconds(anchor, seconds, param="expires_after")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="expires_after") from exc
    problem = azure_auth.check_expiry(accepted, "expires_after") if azure_range else None
    if problem:
        raise InvalidRequest(problem, param="expires_after")
    return accepted


def _check_file_cap(state: SimulatorState, purpose: str, expires_after_s: int | None, flavor: Flavor) -> None:
    """Azure: only `max_files_without_expiry` batch files per resource may lack an expiry."""
    opts = state.engine.options
    if flavor != "azure" or purpose != "batch" or expires_after_s is not None:
        return
    if state.files.count_without_expiry(purpose) >= opts.max_files_without_expiry:
        raise InvalidRequest(
            f"This resource already holds {opts.max_files_without_expiry} batch files without an expiry, the "
            "most allowed. Delete files you no longer need, or upload with 'expires_after' set (up to 10,000 "
            "files with an expiry are allowed).",
            param="expires_after",
            code="file_limit_exceeded",
        )


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
        flavor = flavor_of(request, state.engine.options)
        expires_after_s = _upload_expiry(upload.fields, azure_range=azure_auth.is_azure(request))
        _check_file_cap(state, purpose, expires_after_s, flavor)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    record = state.files.register(file_id, filename=upload.filename, purpose=purpose, expires_after_s=expires_after_s)
    return _json(_file_json(record, flavor))


@router.get("/files")
async def list_files(request: Request) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    flavor = flavor_of(request, state.engine.options)
    data = [_file_json(record, flavor) for record in reversed(state.files.all())]
    return _json({"object": "list", "data": data, "has_more": False})


@router.get("/files/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> Response:
    state = simulator_state(request)
    authorize(request, state.engine.options.api_key)
    return _json(_file_json(_file(state, file_id), flavor_of(request, state.engine.options)))


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
    if state.engine.options.files_read_forbidden:
        raise ProviderError(403, FILES_READ_FORBIDDEN, error_type="invalid_request_error", code=None)
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


def _window_accepted(window: str, flavor: Flavor) -> bool:
    if flavor != "groq":
        return window in COMPLETION_WINDOWS
    unit, number = window[-1:], window[:-1]
    if unit not in ("h", "d") or not number.isdigit():
        return False
    hours = int(number) * (24 if unit == "d" else 1)
    return GROQ_WINDOW_HOURS[0] <= hours <= GROQ_WINDOW_HOURS[1]


def _output_expiry(value: Any, *, azure_range: bool) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'output_expires_after' must be an object.", param="output_expires_after")
    try:
        accepted = expires_after_seconds(value.get("anchor"), value.get("seconds"), param="output_expires_after")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="output_expires_after") from exc
    problem = azure_auth.check_expiry(accepted, "output_expires_after") if azure_range else None
    if problem:
        raise InvalidRequest(problem, param="output_expires_after")
    return accepted


def _batch_request(body: Any, flavor: Flavor, *, azure_range: bool) -> dict[str, Any]:
    """The batch attributes of a valid create body (endpoint, input_file_id, completion_window, metadata,
    output_expires_after_s); InvalidRequest otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for key in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise InvalidRequest(f"Missing required parameter: '{key}'.", param=key)
    endpoints: tuple[str, ...] = (CHAT_ENDPOINT, AZURE_CHAT_ENDPOINT) if flavor == "azure" else (CHAT_ENDPOINT,)
    endpoints += (EMBEDDINGS_ENDPOINT,) if flavor in ("openai", "azure") else ()
    endpoints += (AZURE_EMBEDDINGS_ENDPOINT,) if flavor == "azure" else ()
    endpoints += (RESPONSES_ENDPOINT,) if flavor == "openai" else ()
    if body["endpoint"] not in endpoints:
        raise InvalidRequest(
            f"The simulator supports only endpoints {list(endpoints)!r}, got {body['endpoint']!r}.",
            param="endpoint",
        )
    if not _window_accepted(body["completion_window"], flavor):
        supported = "'24h' to '7d'" if flavor == "groq" else "'24h'"
        raise InvalidRequest(
            f"Invalid value for 'completion_window': {body['completion_window']!r}. Supported values are: {supported}.",
            param="completion_window",
            code="invalid_value",
        )
    return {
        "endpoint": body["endpoint"],
        "input_file_id": body["input_file_id"],
        "completion_window": body["completion_window"],
        "metadata": _metadata(body.get("metadata")),
        "output_expires_after_s": _output_expiry(body.get("output_expires_after"), azure_range=azure_range),
    }


@router.post("/batches")
async def create_batch(request: Request) -> Response:
    state = simulator_state(request)
    engine = state.engine
    opts = engine.options
    authorize(request, opts.api_key)
    flavor = flavor_of(request, opts)
    attributes = _batch_request(await json_body(request), flavor, azure_range=azure_auth.is_azure(request))
    refusal = account_error(opts, batch_create=True)
    if refusal is not None:
        raise refusal
    source = _file(state, attributes["input_file_id"])
    if source.purpose != "batch":
        raise InvalidRequest(f"File {source.id} does not have purpose 'batch'.", param="input_file_id")
    requests, issues = await asyncio.to_thread(
        check_input_file, source.path, endpoint=attributes["endpoint"], options=opts, cache=state.engine.prompt_cache
    )
    batch_id = f"batch_{new_file_id().removeprefix('file-')}"
    azure = flavor == "azure"
    if azure_auth.is_azure(request):  # listed at Azure's paths only, billed as Azure bills its deployments
        attributes["face"] = "azure"
        attributes["billed_as"] = {line.model: azure_billed_name(line.model, opts) for line in requests}
    try:
        record = await asyncio.to_thread(
            engine.create_batch,
            batch_id,
            requests,
            issues,
            attributes,
            token_limit="refuse" if azure else "fail",
            expires=not azure,
        )
    except TokenLimitExceeded as exc:  # Azure "fail-fast": the create call itself is refused
        raise InvalidRequest(str(exc), code=exc.code) from exc
    return _json(await _batch_json(state, engine.batch(record.id)))


async def result_files(state: SimulatorState, current: BatchView) -> ResultFiles:
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
    expiry = current.record.attributes.get("output_expires_after_s")
    output = state.files.writer(filename=f"{batch_id}_output.jsonl", purpose="batch_output", expires_after_s=expiry)
    errors = state.files.writer(filename=f"{batch_id}_error.jsonl", purpose="batch_output", expires_after_s=expiry)
    try:
        for to_error_file, raw in result_lines(current):
            (errors if to_error_file else output).write(raw)
    finally:
        output_id, errors_id = output.finish(), errors.finish()
    return output_id, errors_id


async def _batch_json(state: SimulatorState, current: BatchView) -> dict[str, Any]:
    azure = current.record.options.flavor == "azure" or current.record.attributes.get("face") == "azure"
    render = azure_batch_object if azure else batch_object
    return render(current, await result_files(state, current))


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
    return _json(await _batch_json(state, cancel_or_conflict(state.engine, batch_id)))


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
    face = "azure" if azure_auth.is_azure(request) else None
    for current in state.engine.batches_newest_first():
        if current.record.attributes.get("face") != face:
            continue  # each face lists its own batches (Message Batches, Mistral jobs, Azure's...)
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
