"""The Google Gemini API face (v1beta): `models/{m}:generateContent` and `:streamGenerateContent` (what litellm's
`gemini/...` sync lane calls with an `api_base`), Batch Mode (`models/{m}:batchGenerateContent`, batch operations,
cancel, list, delete) and the Files API (resumable upload, metadata, download, delete), over the
provider-neutral engine (answers, tokens, batch lifecycle, faults, ledger).

As strict as the real API where batchgate depends on it: the key in `x-goog-api-key` or `?key=` (none: 403
PERMISSION_DENIED; a wrong one when the `api_key` knob is set: 400 API_KEY_INVALID), Google's error shape
`{"error": {"code", "message", "status"}}`, unknown request fields refused, the inline batch call limited to
`gemini_inline_max_bytes` (20 MB), an upload's bytes matching the length announced at its start, batch states
`BATCH_STATE_*` and counts as int64 strings. A batch line whose request is invalid fails alone (400 in its
response entry). A cancelled or expired batch answers the lines that had finished (and bills them); the others
are left out. Prices: the ledger bills `gemini/<model>` (litellm's price map names), batch lines at the batch
price (half of list where the map has none). Gemini Flex (https://ai.google.dev/gemini-api/docs/flex-inference):
a `generateContent` call with `serviceTier: "flex"` is billed at the flex tier (the map's flex price, else the batch
price: 50% of list), waits `flex_latency_s` more, is refused 429 RESOURCE_EXHAUSTED at `flex_429_rate` (best-effort
capacity), and says its tier in the `x-gemini-service-tier` response header (which litellm turns into the OpenAI
response's `service_tier`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from proxy.simulator.answers import Answer, answer_for
from proxy.simulator.batches import BatchLine, BatchView, LineRequest, Status
from proxy.simulator.embeddings import ENDPOINT as EMBEDDINGS_ENDPOINT
from proxy.simulator.embeddings import embedding_answer, embedding_problem, vector
from proxy.simulator.engine import BatchNotCancellable, Fault
from proxy.simulator.ledger import Tier
from proxy.simulator.state import SimulatorState, simulator_state

JSON = "application/json"
BATCH_PREFIX = "gembatch-"
FILE_PURPOSE = "gemini-batch"
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"
DEFAULT_PAGE = 50
MAX_PAGE = 1000
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
STATES = {
    Status.VALIDATING: "BATCH_STATE_PENDING",
    Status.IN_PROGRESS: "BATCH_STATE_RUNNING",
    Status.FINALIZING: "BATCH_STATE_RUNNING",
    Status.CANCELLING: "BATCH_STATE_RUNNING",
    Status.COMPLETED: "BATCH_STATE_SUCCEEDED",
    Status.FAILED: "BATCH_STATE_FAILED",
    Status.EXPIRED: "BATCH_STATE_EXPIRED",
    Status.CANCELLED: "BATCH_STATE_CANCELLED",
}
# GenerateContentRequest fields, in both proto JSON spellings (camelCase and the proto's snake_case)
REQUEST_FIELDS = frozenset(
    {
        "model", "contents", "tools", "toolConfig", "tool_config", "safetySettings", "safety_settings",
        "systemInstruction", "system_instruction", "generationConfig", "generation_config", "cachedContent",
        "cached_content", "serviceTier", "service_tier",
    }
)  # fmt: skip
ROLES = frozenset({"user", "model", "function"})
# EmbedContentRequest fields (asyncBatchEmbedContent's requests), both spellings
EMBED_FIELDS = frozenset(
    {"model", "content", "taskType", "task_type", "title", "outputDimensionality", "output_dimensionality"}
)
EMBED_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.EmbedContentBatch"
EMBED_OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.EmbedContentBatchOutput"

router = APIRouter()


def error(status: int, message: str, *, reason: str | None = None) -> Response:
    body: dict[str, Any] = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if reason is not None:
        body["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
        ]
    return Response(orjson.dumps({"error": body}), status_code=status, media_type=JSON)


def _json(payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON, headers=dict(headers or {}))


def _unauthorized(request: Request, state: SimulatorState) -> Response | None:
    key = request.headers.get("x-goog-api-key", "").strip() or request.query_params.get("key", "").strip()
    if not key:
        return error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API "
            "Key or other form of API consumer identity to call this API.",
        )
    expected = state.engine.options.api_key
    if expected is not None and key != expected:
        return error(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
    return None


class GoogleError(Exception):
    """An error answer raised from a dependency (the app renders `response` as it is)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def google_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GoogleError)
    return exc.response


def keyed_state(request: Request) -> SimulatorState:
    """The simulator's state for a call that presents an accepted key; GoogleError otherwise."""
    state = simulator_state(request)
    refused = _unauthorized(request, state)
    if refused is not None:
        raise GoogleError(refused)
    return state


Keyed = Annotated[SimulatorState, Depends(keyed_state)]


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


# the request


def _field(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    return mapping.get(camel, mapping.get(snake))


def request_problem(request: Any, fields: frozenset[str] = REQUEST_FIELDS) -> str | None:
    """Why a GenerateContentRequest is invalid (Google's 400 message), or None; `fields` are those known."""
    if not isinstance(request, dict):
        return "Invalid JSON payload received. Expected an object."
    unknown = sorted(set(request) - fields)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    config = _field(request, "generationConfig", "generation_config")
    if config is not None and not isinstance(config, dict):
        return "Invalid JSON payload received. generationConfig must be an object."
    return _contents_problem(request.get("contents"))


def _contents_problem(contents: Any) -> str | None:
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for index, content in enumerate(contents):
        problem = None
        if not isinstance(content, dict):
            problem = "must be an object"
        elif content.get("role", "user") not in ROLES:
            problem = "Please use a valid role: user, model."
        elif not isinstance(content.get("parts"), list) or not content["parts"]:
            problem = "contents.parts must not be empty."
        if problem is not None:
            return f"* GenerateContentRequest.contents[{index}]: {problem}"
    return None


def chat_body(request: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The request as the engine's answers read one (an OpenAI-shaped chat body): the same conversation gets
    the same answer on every face."""
    messages: list[dict[str, Any]] = []
    system = _field(request, "systemInstruction", "system_instruction")
    if isinstance(system, dict) and isinstance(system.get("parts"), list):
        messages.append({"role": "system", "content": system["parts"]})
    for content in request["contents"]:
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": content["parts"]})
    config = _field(request, "generationConfig", "generation_config") or {}
    body: dict[str, Any] = {"model": model, "messages": messages}
    max_tokens = _field(config, "maxOutputTokens", "max_output_tokens")
    if isinstance(max_tokens, int):
        body["max_tokens"] = max_tokens
    candidates = _field(config, "candidateCount", "candidate_count")
    if isinstance(candidates, int):
        body["n"] = candidates
    return body


def generate_response(answer: Answer, model: str) -> dict[str, Any]:
    """A GenerateContentResponse for an answer."""
    candidates = [
        {
            "content": {"role": "model", "parts": [{"text": answer.content}]},
            "finishReason": FINISH_REASONS.get(answer.finish_reason, "STOP"),
            "index": index,
        }
        for index in range(answer.choices)
    ]
    return {
        "candidates": candidates,
        "usageMetadata": {
            "promptTokenCount": answer.prompt_tokens,
            "candidatesTokenCount": answer.completion_tokens,
            "totalTokenCount": answer.total_tokens,
        },
        "modelVersion": model,
        "responseId": uuid.uuid4().hex[:22],
    }


def _fault_response(fault: Fault) -> Response:
    if fault.body is not None:
        return Response(fault.body, status_code=fault.status, media_type="text/html")
    if fault.status == 429:
        return error(429, "Resource has been exhausted (e.g. check quota). (simulated)")
    if fault.status >= 500:
        return error(fault.status, "An internal error has occurred. (simulated)")
    return error(fault.status, "Invalid request. (simulated)")


@router.post("/v1beta/models/{target}")
async def models_call(request: Request, target: str, state: Keyed) -> Response:
    model, _, method = target.partition(":")
    if method == "batchGenerateContent":
        return await create_batch(request, state, model)
    if method == "asyncBatchEmbedContent":
        return await create_batch(request, state, model, embed=True)
    if method not in ("generateContent", "streamGenerateContent"):
        return error(404, f"Method {method!r} not found for models/{model}.")
    return await generate(request, state, model, stream=method == "streamGenerateContent")


async def generate(
    request: Request,
    state: SimulatorState,
    model: str,
    *,
    stream: bool,
    provider: str = "gemini",
    fields: frozenset[str] = REQUEST_FIELDS,
) -> Response:
    """A `generateContent` (or streamed) answer, billed as `{provider}/{model}` (Vertex AI's face: `vertex_ai`,
    its own request `fields`)."""
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    problem = request_problem(payload, fields)
    if problem:
        return error(400, problem)
    engine = state.engine
    tier = Tier.FLEX if service_tier(payload) == "flex" else Tier.SYNC
    fault = engine.sync_fault(tier)
    if fault is not None:
        return _fault_response(fault)
    delay = engine.options.sync_latency_s + (engine.options.flex_latency_s if tier is Tier.FLEX else 0.0)
    if delay:
        await asyncio.sleep(delay)
    answer = answer_for(chat_body(payload, model))
    engine.bill(f"{provider}/{model}", tier, answer)
    response = generate_response(answer, model)
    if not stream:
        return _json(response, {"x-gemini-service-tier": "flex" if tier is Tier.FLEX else "standard"})
    chunks = list(stream_chunks(response, chunk_chars=engine.options.stream_chunk_chars))
    if request.query_params.get("alt") == "sse":
        events = [b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in chunks]
        return StreamingResponse(iter(events), media_type="text/event-stream")
    return _json(chunks)


def service_tier(request: Mapping[str, Any]) -> str:
    """A GenerateContentRequest's service tier, lower-cased (`standard` when unset)."""
    tier = _field(request, "serviceTier", "service_tier")
    return tier.lower() if isinstance(tier, str) else "standard"


def stream_chunks(response: Mapping[str, Any], *, chunk_chars: int) -> Iterator[dict[str, Any]]:
    """A response as Gemini streams it: text in pieces; the finish reason and usage on the last piece."""
    candidate = response["candidates"][0]
    text = candidate["content"]["parts"][0]["text"]
    pieces = [text[offset : offset + chunk_chars] for offset in range(0, len(text), chunk_chars)] or [""]
    for position, piece in enumerate(pieces):
        last = position == len(pieces) - 1
        chunk: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}],
            "modelVersion": response["modelVersion"],
            "responseId": response["responseId"],
        }
        if last:
            chunk["candidates"][0]["finishReason"] = candidate["finishReason"]
            chunk["usageMetadata"] = response["usageMetadata"]
        yield chunk


# batches


def _line_requests(entries: list[tuple[str, Any]], model: str, *, embed: bool = False) -> list[LineRequest]:
    """Each (key, request) answered; an invalid request fails its own line (400)."""
    parsed = []
    for key, request in entries:
        if embed:
            problem = embed_problem(request)
            answer = embedding_answer(embedding_body(request, model)) if problem is None else None
        else:
            problem = request_problem(request)
            answer = answer_for(chat_body(request, model)) if problem is None else None
        parsed.append(LineRequest(key, f"gemini/{model}", answer, problem))  # billed by its price-map name
    return parsed


def embed_problem(request: Any) -> str | None:
    """Why an EmbedContentRequest is invalid (Google's 400 message), or None."""
    if not isinstance(request, dict):
        return "Invalid JSON payload received. Expected an object."
    unknown = sorted(set(request) - EMBED_FIELDS)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        return "* EmbedContentRequest.content: content is not specified"
    if not all(isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"] for part in parts):
        return "* EmbedContentRequest.content.parts: the simulator embeds non-empty text parts only"
    dimensions = _field(request, "outputDimensionality", "output_dimensionality")
    problem = embedding_problem(embedding_body(request, "gemini-embedding")) if dimensions is not None else None
    return f"* EmbedContentRequest.output_dimensionality: {problem[0]}" if problem else None


def embedding_body(request: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The request as the engine's embeddings read one (an OpenAI embeddings body of one input)."""
    text = "".join(part["text"] for part in request["content"]["parts"])
    body: dict[str, Any] = {"model": model, "input": text}
    dimensions = _field(request, "outputDimensionality", "output_dimensionality")
    if dimensions is not None:
        body["dimensions"] = dimensions
    return body


def _inline_entries(input_config: Mapping[str, Any]) -> list[tuple[str, Any]] | str:
    outer = lenient_mapping(input_config.get("requests"))
    items = outer.get("requests")
    if not isinstance(items, list) or not items:
        return "* BatchGenerateContentRequest.batch.input_config.requests: requests must not be empty."
    entries = []
    for index, raw in enumerate(items):
        item = lenient_mapping(raw)
        key = lenient_mapping(item.get("metadata")).get("key")
        entries.append((str(key) if key is not None else str(index), item.get("request")))
    return entries


def _file_entries(state: SimulatorState, file_name: str) -> list[tuple[str, Any]] | str | None:
    """The file's `{"key", "request"}` lines; None: no such file; a str: why the file is refused."""
    record = state.files.get(file_name.removeprefix("files/"))
    if record is None or record.purpose != FILE_PURPOSE:
        return None
    entries = []
    with record.path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                line = lenient_mapping(orjson.loads(raw))
            except orjson.JSONDecodeError:
                return f"Invalid JSON on line {number} of {file_name}."
            key = line.get("key")
            entries.append((str(key) if key is not None else str(number - 1), line.get("request")))
    return entries or f"{file_name} has no requests."


def lenient_mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def create_batch(request: Request, state: SimulatorState, model: str, *, embed: bool = False) -> Response:
    raw = await request.body()
    limit = state.engine.options.gemini_inline_max_bytes
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    batch = lenient_mapping(lenient_mapping(payload).get("batch"))
    display = _field(batch, "displayName", "display_name")
    if not isinstance(display, str) or not display:
        return error(400, "* BatchGenerateContentRequest.batch.display_name: display_name is required.")
    input_config = lenient_mapping(_field(batch, "inputConfig", "input_config"))
    file_name = _field(input_config, "fileName", "file_name")
    if isinstance(file_name, str):
        found = await asyncio.to_thread(_file_entries, state, file_name)
        if found is None:
            return error(404, f"File {file_name} not found.")
        entries: list[tuple[str, Any]] | str = found
    else:
        if len(raw) > limit:
            return error(400, f"Request payload size exceeds the limit: {limit} bytes.")
        entries = _inline_entries(input_config)
    if isinstance(entries, str):
        return error(400, entries)
    requests = await asyncio.to_thread(partial(_line_requests, embed=embed), entries, model)
    attributes = {
        "face": "gemini", "endpoint": EMBEDDINGS_ENDPOINT if embed else "/v1/chat/completions",
        "input_file_id": None, "completion_window": "48h", "metadata": None, "display_name": display,
        "model": model, "file_input": isinstance(file_name, str), "embed": embed,
    }  # fmt: skip
    engine = state.engine
    record = await asyncio.to_thread(
        engine.create_batch, f"{BATCH_PREFIX}{uuid.uuid4().hex[:24]}", requests, [], attributes
    )
    return _json(await operation(state, engine.batch(record.id)))


def _counts(current: BatchView) -> dict[str, str]:
    total = len(current.record.lines)
    succeeded = sum(1 for line in current.finished if line.succeeded)
    failed = len(current.finished) - succeeded
    counts = {
        "requestCount": total,
        "successfulRequestCount": succeeded,
        "failedRequestCount": failed,
        "pendingRequestCount": 0 if current.status.is_terminal else total - len(current.finished),
    }
    return {name: str(value) for name, value in counts.items() if value}  # proto JSON leaves zeros out


def _entry(line: BatchLine, model: str) -> dict[str, Any]:
    if line.answer is not None and line.answer.embedding is not None:
        spec, tokens = line.answer.embedding, line.answer.prompt_tokens
        usage = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        return {"response": {"embedding": {"values": vector(spec.digests[0], spec.dimensions)}, "usageMetadata": usage}}
    if line.answer is not None:
        return {"response": generate_response(line.answer, model)}
    status = line.status_code
    return {"error": {"code": status, "message": line.error_message or "", "status": STATUS_NAMES.get(status)}}


def _finished_in_order(current: BatchView) -> list[BatchLine]:
    return sorted(current.finished, key=lambda line: line.index)


async def _responses_file(state: SimulatorState, current: BatchView) -> str:
    """The batch's responses file (written once, when the batch has ended)."""
    record = current.record
    async with state.result_files_lock:
        written = state.result_files.get(record.id)
        if written is not None and written[0] is not None:
            return written[0]
        writer = state.files.writer(filename=f"{record.id}-responses.jsonl", purpose=FILE_PURPOSE)
        for line in _finished_in_order(current):
            writer.write(orjson.dumps({"key": line.custom_id, **_entry(line, record.attributes["model"])}))
        file_id = writer.finish() or ""
        state.result_files[record.id] = (file_id, None)
        return file_id


async def operation(state: SimulatorState, current: BatchView) -> dict[str, Any]:
    """A batch as the Operation `batches.get` answers."""
    record = current.record
    name = f"batches/{record.id}"
    status = current.status
    model = record.attributes["model"]
    embed = bool(record.attributes.get("embed"))
    batch: dict[str, Any] = {
        "@type": EMBED_BATCH_TYPE if embed else BATCH_TYPE,
        "model": f"models/{model}",
        "displayName": record.attributes["display_name"],
        "createTime": _iso(record.created_at),
        "updateTime": _iso(current.now),
        "batchStats": _counts(current),
        "state": STATES[status],
        "name": name,
    }
    body: dict[str, Any] = {"name": name, "metadata": batch, "done": status.is_terminal}
    if not status.is_terminal:
        return body
    batch["endTime"] = _iso(current.timeline.end_at)
    if status is Status.FAILED:
        body["error"] = {"code": 400, "message": "The batch failed validation.", "status": "INVALID_ARGUMENT"}
        return body
    output_type = EMBED_OUTPUT_TYPE if embed else OUTPUT_TYPE
    if record.attributes["file_input"]:
        file_id = await _responses_file(state, current)
        output: dict[str, Any] = {"@type": output_type, "responsesFile": f"files/{file_id}"} if file_id else {}
    else:
        inlined = [{**_entry(line, model), "metadata": {"key": line.custom_id}} for line in _finished_in_order(current)]
        output = {"@type": output_type, "inlinedResponses": {"inlinedResponses": inlined}}
    if output:
        body["response"] = output
        batch["output"] = {key: value for key, value in output.items() if key != "@type"}
    return body


def _view(state: SimulatorState, batch_id: str) -> BatchView | None:
    return state.engine.batch_of_face(batch_id, BATCH_PREFIX)


def _batch_not_found(batch_id: str) -> Response:
    return error(404, f"Batch batches/{batch_id} not found.")


@router.get("/v1beta/batches/{batch_id}")
async def get_batch(request: Request, batch_id: str, state: Keyed) -> Response:
    current = _view(state, batch_id)
    if current is None:
        return _batch_not_found(batch_id)
    return _json(await operation(state, current))


@router.post("/v1beta/batches/{target}")
async def batch_action(request: Request, target: str, state: Keyed) -> Response:
    batch_id, _, method = target.partition(":")
    if method != "cancel":
        return error(404, f"Method {method!r} not found for batches.")
    if _view(state, batch_id) is None:
        return _batch_not_found(batch_id)
    try:
        state.engine.cancel_batch(batch_id)
    except BatchNotCancellable:
        return error(400, f"Batch batches/{batch_id} has ended and cannot be cancelled.")
    return _json({})


@router.delete("/v1beta/batches/{batch_id}")
async def delete_batch(request: Request, batch_id: str, state: Keyed) -> Response:
    if _view(state, batch_id) is None:
        return _batch_not_found(batch_id)
    return _json({})  # the record stays in the engine: it is the ledger's history


@router.get("/v1beta/batches")
async def list_batches(request: Request, state: Keyed) -> Response:
    raw_size = request.query_params.get("pageSize", str(DEFAULT_PAGE))
    raw_token = request.query_params.get("pageToken", "0")
    if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE or not raw_token.isdigit():
        return error(400, f"pageSize must be from 1 to {MAX_PAGE}; pageToken must come from a listing.")
    size, start = int(raw_size), int(raw_token)
    ours = [current for current in state.engine.batches_newest_first() if current.record.id.startswith(BATCH_PREFIX)]
    page = ours[start : start + size]
    body: dict[str, Any] = {"operations": [await operation(state, current) for current in page]}
    if start + size < len(ours):
        body["nextPageToken"] = str(start + size)
    return _json(body)


# files


def _file_object(state: SimulatorState, file_id: str) -> dict[str, Any] | None:
    record = state.files.get(file_id)
    if record is None or record.purpose != FILE_PURPOSE:
        return None
    created = _iso(record.created_at)
    return {
        "name": f"files/{record.id}",
        "displayName": record.filename,
        "mimeType": "application/jsonl",
        "sizeBytes": str(record.bytes),
        "createTime": created,
        "updateTime": created,
        "expirationTime": _iso(record.created_at + 48 * 3600),
        "state": "ACTIVE",
        "source": "UPLOADED",
    }


@router.post("/upload/v1beta/files")
async def upload(request: Request, state: Keyed) -> Response:
    """The resumable upload: `start` (answers the upload URL), then `upload, finalize` at that URL."""
    command = request.headers.get("x-goog-upload-command", "").replace(" ", "")
    upload_id = request.query_params.get("upload_id")
    if upload_id is None:
        return await _start_upload(request, state, command)
    return await _finish_upload(request, state, command, upload_id)


async def _start_upload(request: Request, state: SimulatorState, command: str) -> Response:
    if request.headers.get("x-goog-upload-protocol") != "resumable" or command != "start":
        return error(400, "Upload protocol must be resumable and the first command `start`.")
    declared = request.headers.get("x-goog-upload-header-content-length", "")
    if not declared.isdigit():
        return error(400, "X-Goog-Upload-Header-Content-Length is required.")
    if int(declared) > state.engine.options.max_file_bytes:
        return error(400, f"File size exceeds the limit of {state.engine.options.max_file_bytes} bytes.")
    try:
        meta = lenient_mapping(lenient_mapping(orjson.loads(await request.body() or b"{}")).get("file"))
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    upload_id = uuid.uuid4().hex
    state.gemini_uploads[upload_id] = (int(declared), str(meta.get("displayName") or "upload.jsonl"))
    url = f"{str(request.base_url).rstrip('/')}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable"
    return _json({}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"})


async def _finish_upload(request: Request, state: SimulatorState, command: str, upload_id: str) -> Response:
    session = state.gemini_uploads.pop(upload_id, None)
    if session is None:
        return error(404, "No such upload session.")
    if command != "upload,finalize" or request.headers.get("x-goog-upload-offset", "0") != "0":
        return error(400, "Expected `upload, finalize` at offset 0.")
    declared, filename = session
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    path = state.files.new_path(file_id)
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            out.write(chunk)
    if size != declared:
        path.unlink(missing_ok=True)
        return error(400, f"Received {size} bytes; the upload announced {declared}.")
    state.files.register(file_id, filename=filename, purpose=FILE_PURPOSE)
    return _json({"file": _file_object(state, file_id)}, {"x-goog-upload-status": "final"})


@router.get("/v1beta/files")
async def list_files(state: Keyed) -> Response:
    """Every Gemini-face file (one page: the simulator holds few)."""
    files = [_file_object(state, record.id) for record in state.files.all() if record.purpose == FILE_PURPOSE]
    return _json({"files": [found for found in files if found is not None]})


@router.get("/v1beta/files/{file_id}")
async def get_file(request: Request, file_id: str, state: Keyed) -> Response:
    found = _file_object(state, file_id)
    return _json(found) if found is not None else error(404, f"File files/{file_id} not found.")


@router.delete("/v1beta/files/{file_id}")
async def delete_file(request: Request, file_id: str, state: Keyed) -> Response:
    if _file_object(state, file_id) is None:
        return error(404, f"File files/{file_id} not found.")
    state.files.delete(file_id)
    return _json({})


@router.get("/download/v1beta/files/{target}")
async def download(request: Request, target: str, state: Keyed) -> Response:
    file_id, _, method = target.partition(":")
    record = state.files.get(file_id)
    if method != "download" or request.query_params.get("alt") != "media":
        return error(400, "Use files/{id}:download?alt=media.")
    if record is None or record.purpose != FILE_PURPOSE:
        return error(404, f"File files/{file_id} not found.")

    def chunks() -> Iterator[bytes]:
        with record.path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/jsonl")
