"""Google Gemini API Batch Mode over httpx, behind the same BatchClient protocol as the other batch adapters.

Wire format (https://ai.google.dev/api/batch-api, v1beta; key in `x-goog-api-key`):
- `POST models/{model}:batchGenerateContent` with `{"batch": {"displayName", "inputConfig": ...}}`, where the
  input is either inline (`{"requests": {"requests": [{"request": GenerateContentRequest, "metadata": {"key"}}]}}`,
  the whole call at most 20 MB) or a JSONL file of `{"key", "request"}` lines uploaded through the Files API
  (`{"fileName": "files/..."}`). It answers an Operation whose `metadata` is the batch.
- `GET batches/{id}`: the Operation; `metadata.state` is `BATCH_STATE_PENDING|RUNNING|SUCCEEDED|FAILED|CANCELLED|
  EXPIRED` (the SDK spells them `JOB_STATE_*`; both are read), `metadata.batchStats` counts requests (int64
  strings). Once `done`, `response` holds `inlinedResponses.inlinedResponses[]` (`{"response"|"error",
  "metadata": {"key"}}`) or `responsesFile` (JSONL of `{"key", "response"|"error"}`, read through
  `download/v1beta/files/{id}:download?alt=media`).
- `POST batches/{id}:cancel`, `GET batches` (paged `operations`), `DELETE files/{id}`.
- The Files API upload is resumable: `POST upload/v1beta/files` with `X-Goog-Upload-Command: start` answers an
  upload URL in `X-Goog-Upload-URL`; the bytes go there with `upload, finalize`.

`prepare` stages the translated requests (gemini_translation.py, the sync lane's translation) as JSONL on local
disk. A batch whose inline call fits the inline limit stays staged (ref `staged-<name>-<count>`, sent inline by
`create` and then deleted; a ref staged on another host is NOT_FOUND and is prepared again; an inline call the
provider still finds too large goes as a file); a larger one is uploaded at once (ref
`uploaded-<count>-files/<id>`, usable from any host, deleted by `cleanup`).

Batches carry no metadata, but a display name: `batchgate-<digest of the metadata>`. `find_batches` lists the
batches created since the submission began and takes those with that display name: exact, on any host.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from proxy.errors import error_body
from proxy.providers import lenient
from proxy.providers.base import (
    BatchInfo,
    BatchIssue,
    BatchState,
    ErrorClass,
    LineOutcome,
    PreparedInput,
    ProviderError,
    ResultLine,
    bad_line,
)
from proxy.providers.batch_http import answer_json, batch_http, provider_errors
from proxy.providers.gemini_embedding import JoinedEmbedding, embed_requests, part_key
from proxy.providers.gemini_translation import GeminiRefusal, chat_completion, generate_request

log = logging.getLogger("batchgate.providers.gemini_batch")

GEMINI_BASE = "https://generativelanguage.googleapis.com/v1beta"
INLINE_MAX_BYTES = 20 * 1024 * 1024  # the whole inline batchGenerateContent call
GENERATE_METHOD = "batchGenerateContent"
EMBED_METHOD = "asyncBatchEmbedContent"  # the same batch shape, of EmbedContentRequests (EmbedContentBatch)
MAX_FILE_BYTES = 2 * 1024 * 1024 * 1024  # a Files API upload
DISPLAY_PREFIX = "batchgate-"
MARKER_LENGTH = 16
STAGED = re.compile(r"^staged-(?P<name>[0-9a-f]{32})-(?P<requests>[0-9]+)$")
UPLOADED = re.compile(r"^uploaded-(?P<requests>[0-9]+)-(?P<file>files/[A-Za-z0-9_-]+)$")
LIST_PAGE = 100
MAX_LIST_PAGES = 20
CLOCK_SKEW = 60.0
READ_CHUNK = 1 << 20
PAYLOAD_TOO_LARGE = "payload size exceeds the limit"  # Google's 400 for an inline call over its limit
UPLOADED_SUFFIX = ".uploaded"  # beside a staged input that went as a file: the file's name
INLINE_HEAD = b'{"batch":{"displayName":%b,"inputConfig":{"requests":{"requests":['
INLINE_TAIL = b"]}}}}"
INLINE_ENTRY_OVERHEAD = len(b'{"request":,"metadata":{"key":}},')

STATES: Mapping[str, BatchState] = {
    f"{family}state{name}": state
    for family in ("batch", "job")
    for name, state in (
        ("unspecified", BatchState.VALIDATING),
        ("pending", BatchState.VALIDATING),
        ("queued", BatchState.VALIDATING),
        ("running", BatchState.IN_PROGRESS),
        ("succeeded", BatchState.COMPLETED),
        ("failed", BatchState.FAILED),
        ("cancelling", BatchState.CANCELLING),
        ("cancelled", BatchState.CANCELLED),
        ("expired", BatchState.EXPIRED),
    )
}
ACCOUNT_STATUSES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})
ACCOUNT_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "BILLING_DISABLED", "SERVICE_DISABLED"})
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def default_staging_dir() -> Path:
    return Path(tempfile.gettempdir()) / "batchgate-gemini"


def display_name(metadata: Mapping[str, str]) -> str:
    """The display name a batch for `metadata` carries upstream (how recovery finds it)."""
    canonical = orjson.dumps(dict(sorted(metadata.items())))
    return DISPLAY_PREFIX + hashlib.sha256(canonical).hexdigest()[:MARKER_LENGTH]


def encode_request(
    custom_id: str, body: Mapping[str, Any], *, model: str, extra_params: Mapping[str, Any] | None = None
) -> bytes:
    """One batch input line, `{"key", "request"}`, for an OpenAI chat body, translated as the sync lane
    translates it. A body litellm will not translate raises ProviderError(BAD_LINE, custom_id=custom_id)."""
    try:
        request = generate_request(body, model=model, extra_params=extra_params or {})
        return orjson.dumps({"key": custom_id, "request": request})
    except GeminiRefusal as exc:
        message = str(exc)
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"The request body cannot be written as a Gemini batch request: {exc}."
    raise bad_line(custom_id, message)


def encode_embedding_requests(custom_id: str, body: Mapping[str, Any], *, model: str) -> bytes:
    """The `{"key", "request"}` lines (newline-separated, none after the last) of an OpenAI embeddings body: one
    EmbedContentRequest per input (gemini_embedding.py). Raises ProviderError(BAD_LINE, custom_id=custom_id)."""
    try:
        return b"\n".join(
            orjson.dumps({"key": key, "request": request})
            for key, request in embed_requests(custom_id, body, model=model)
        )
    except GeminiRefusal as exc:
        message = str(exc)
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"The request body cannot be written as a Gemini batch request: {exc}."
    raise bad_line(custom_id, message)


def encode_lines(
    custom_id: str, body: Mapping[str, Any], *, model: str, extra_params: Mapping[str, Any], embeddings: bool
) -> bytes:
    """The input line(s) of one job: an embeddings body's (`embeddings`) or a chat body's. Raises as they do."""
    if embeddings:
        return encode_embedding_requests(custom_id, body, model=model)
    return encode_request(custom_id, body, model=model, extra_params=extra_params)


class GeminiBatchClient:
    """Gemini batches for one deployment: `base_url` is the API version root (`.../v1beta`), `upstream_model`
    the model without `gemini/`; an input whose inline call would exceed `inline_max_bytes` goes as a file.
    `embeddings`: batches of OpenAI embeddings bodies (`asyncBatchEmbedContent`), else of chat bodies."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        upstream_model: str,
        timeout: float = 60.0,
        staging_dir: Path | None = None,
        extra_params: Mapping[str, Any] | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
        embeddings: bool = False,
    ) -> None:
        headers = {"x-goog-api-key": api_key} if api_key else {}
        base = base_url.rstrip("/")
        root, _, version = base.rpartition("/")
        self._root = root
        self._version = version
        self._http = batch_http(base_url=base + "/", headers=headers, timeout=timeout)
        self._model = upstream_model.removeprefix("gemini/").removeprefix("models/")
        self._extra = dict(extra_params or {})
        self._staging = staging_dir or default_staging_dir()
        self._inline_max = inline_max_bytes
        self._embeddings = embeddings

    # the input

    async def prepare(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], *, metadata: Mapping[str, str]
    ) -> PreparedInput:
        """Stage the JSONL input; keep it for an inline call when it fits, else upload it (see the module notes)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        staging = self._staging / f"{name}.part"
        try:
            count, file_bytes, inline_bytes = await self._stage(requests, staging, display_name(metadata))
            if count == 0:
                staging.unlink()
                return PreparedInput("", 0)
            if inline_bytes <= self._inline_max:
                ref = f"staged-{name}-{count}"
                staging.replace(self._staged_path(ref))
                return PreparedInput(ref, count)
            if file_bytes > MAX_FILE_BYTES:
                raise ProviderError(
                    413,
                    f"A Gemini batch input file is at most {MAX_FILE_BYTES} bytes.",
                    code="request_too_large",
                    classification=ErrorClass.BAD_REQUEST,
                )
            uploaded = await self._upload(staging, file_bytes, display_name(metadata))
            return PreparedInput(f"uploaded-{count}-{uploaded}", count)
        finally:
            staging.unlink(missing_ok=True)

    async def _stage(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], out_path: Path, display: str
    ) -> tuple[int, int, int]:
        """Write the JSONL lines; (lines, file bytes, bytes of the same requests as one inline call)."""
        count = file_bytes = 0
        inline_bytes = len(INLINE_HEAD % orjson.dumps(display)) + len(INLINE_TAIL)
        with out_path.open("wb") as out:
            async for custom_id, body in requests:
                # litellm's translation is CPU work: off the event loop
                lines = await asyncio.to_thread(self._encode, custom_id, body)
                count += 1
                for line in lines.split(b"\n"):
                    file_bytes += len(line) + 1
                    inline_bytes += len(line) + INLINE_ENTRY_OVERHEAD - len(b'{"key":,"request":}')
                    out.write(line)
                    out.write(b"\n")
        return count, file_bytes, inline_bytes

    def _encode(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        return encode_lines(custom_id, body, model=self._model, extra_params=self._extra, embeddings=self._embeddings)

    def _staged_path(self, prepared: str) -> Path:
        found = STAGED.match(prepared)
        if found is None:
            raise ProviderError(404, f"No staged batch input {prepared!r}.", code="not_found")
        return self._staging / f"{found['name']}.jsonl"

    async def _upload(self, path: Path, size: int, display: str) -> str:
        """A resumable Files API upload of `path`; the uploaded file's name (`files/...`)."""
        start_headers = {
            "x-goog-upload-protocol": "resumable",
            "x-goog-upload-command": "start",
            "x-goog-upload-header-content-length": str(size),
            "x-goog-upload-header-content-type": "application/jsonl",
        }
        with provider_errors():
            started = await self._http.post(
                f"{self._root}/upload/{self._version}/files",
                json={"file": {"displayName": display}},
                headers=start_headers,
            )
            _json(started)
            upload_url = started.headers.get("x-goog-upload-url", "")
            if urlsplit(upload_url).netloc != urlsplit(self._root).netloc:  # the key goes to our provider only
                raise lenient.malformed("upload URL", upload_url)
            finished = await self._http.post(
                upload_url,
                content=_chunks(path),
                headers={
                    "x-goog-upload-command": "upload, finalize",
                    "x-goog-upload-offset": "0",
                    "content-length": str(size),
                },
            )
        uploaded = lenient.text(lenient.mapping(_json(finished).get("file")).get("name"))
        if uploaded is None or not uploaded.startswith("files/"):
            raise lenient.malformed("uploaded file (no name)", finished.text[:200])
        return uploaded

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        display = display_name(metadata)
        uploaded = UPLOADED.match(prepared)
        if uploaded is not None:
            return await self._create_from_file(uploaded["file"], display, metadata)
        staged = self._staged_path(prepared)
        if not staged.exists():  # staged by another host or already sent: the submitter prepares it again
            raise ProviderError(404, f"No staged batch input {prepared!r} on this host.", code="not_found")
        payload = await asyncio.to_thread(_inline_body, staged, display)  # at most the inline limit
        try:
            info = await self._create(payload, metadata)
        except ProviderError as exc:
            if exc.status != 400 or PAYLOAD_TOO_LARGE not in exc.message:
                raise
            # the provider measures its inline limit its own way: send the same input as a file instead
            file_name = await self._upload(staged, staged.stat().st_size, display)
            staged.with_suffix(UPLOADED_SUFFIX).write_text(file_name)  # for `cleanup` on this host
            info = await self._create_from_file(file_name, display, metadata)
        staged.unlink(missing_ok=True)
        return info

    async def _create_from_file(self, file_name: str, display: str, metadata: Mapping[str, str]) -> BatchInfo:
        payload = orjson.dumps({"batch": {"displayName": display, "inputConfig": {"fileName": file_name}}})
        return await self._create(payload, metadata)

    async def _create(self, payload: bytes, metadata: Mapping[str, str]) -> BatchInfo:
        with provider_errors():
            response = await self._http.post(
                f"models/{self._model}:{EMBED_METHOD if self._embeddings else GENERATE_METHOD}",
                content=payload,
                headers={"content-type": "application/json"},
            )
        return batch_info(_json(response), metadata=metadata)

    async def cleanup(self, prepared: str) -> None:
        """Remove a staged input never sent, or delete an uploaded input file (missing is fine). A staged input
        that went as a file after all (see `create`) has its file deleted when cleaned up on the same host; on
        another, the file is left to expire upstream (48 h)."""
        if STAGED.match(prepared):
            staged = self._staged_path(prepared)
            staged.unlink(missing_ok=True)
            note = staged.with_suffix(UPLOADED_SUFFIX)
            file_name = note.read_text().strip() if note.exists() else None
            if file_name:
                await self._delete_file(file_name)
            note.unlink(missing_ok=True)
            return
        uploaded = UPLOADED.match(prepared)
        if uploaded is not None:
            await self._delete_file(uploaded["file"])

    async def _delete_file(self, file_name: str) -> None:
        with provider_errors():
            response = await self._http.delete(file_name)
        if response.status_code != 404:
            _json(response)

    # the batch

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_info(await self._operation(batch_id))

    async def _operation(self, batch_id: str) -> dict[str, Any]:
        return await answer_json(self._http.get(batch_id), read=_json)

    async def cancel(self, batch_id: str) -> BatchInfo:
        await answer_json(self._http.post(f"{batch_id}:cancel"), read=_json)
        return await self.retrieve(batch_id)

    async def results(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The ended batch's responses (inline, read from the operation again, or the responses file, streamed),
        each translated into an OpenAI chat.completion and joined back by its key."""
        if not batch.output_file_id:
            return
        items = (
            self._file_items(batch.output_file_id)
            if batch.output_file_id.startswith("files/")
            else self._inline_items(batch.batch_id)
        )
        if self._embeddings:
            async for joined in joined_embeddings(items, self._model):
                yield joined
            return
        async for key, item in items:
            line = await asyncio.to_thread(result_line, key, item, self._model)
            if line is None:
                lenient.skipped_line("no key", orjson.dumps(item))
            else:
                yield line

    async def _inline_items(self, batch_id: str) -> AsyncGenerator[tuple[str | None, dict[str, Any]]]:
        operation = await self._operation(batch_id)
        output = _output(operation)
        listed = lenient.mapping(output.get("inlinedResponses")).get("inlinedResponses")
        for raw in listed if isinstance(listed, list) else []:
            entry = lenient.mapping(raw)
            key = lenient.identifier(lenient.mapping(entry.get("metadata")).get("key"))
            yield key, entry

    async def _file_items(self, file_name: str) -> AsyncGenerator[tuple[str | None, dict[str, Any]]]:
        url = f"{self._root}/download/{self._version}/{file_name}:download"
        with provider_errors():
            async with self._http.stream("GET", url, params={"alt": "media"}) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _json(response)
                async for text in response.aiter_lines():
                    if not text.strip():
                        continue
                    try:
                        item = orjson.loads(text)
                    except orjson.JSONDecodeError:
                        lenient.skipped_line("not JSON", text)
                        continue
                    item = lenient.mapping(item)
                    yield lenient.identifier(item.get("key")), item

    # crash recovery

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """Batches created since `since` whose display name is this metadata's, newest first."""
        display = display_name(metadata)
        earliest = since - CLOCK_SKEW
        found: list[BatchInfo] = []
        params: dict[str, str | int] = {"pageSize": LIST_PAGE}
        for _ in range(MAX_LIST_PAGES):
            page = await answer_json(self._http.get("batches", params=params), read=_json)
            operations = page.get("operations")
            for operation in operations if isinstance(operations, list) else []:
                batch = _batch(lenient.mapping(operation))
                if batch.get("displayName") != display:
                    continue
                try:
                    info = batch_info(operation, metadata=metadata)
                except ProviderError as exc:
                    log.warning("skipping an unreadable listed batch: %s", exc)
                    continue
                if info.created_at >= earliest:
                    found.append(info)
            token = lenient.text(page.get("nextPageToken"))
            if token is None:
                break
            params["pageToken"] = token
        return sorted(found, key=lambda info: info.created_at, reverse=True)

    async def aclose(self) -> None:
        await self._http.aclose()


def _inline_body(staged: Path, display: str) -> bytes:
    """The inline batchGenerateContent call for a staged JSONL input."""
    entries = []
    with staged.open("rb") as lines:
        for raw in lines:
            if raw.strip():
                line = orjson.loads(raw)
                entries.append(orjson.dumps({"request": line["request"], "metadata": {"key": line["key"]}}))
    return INLINE_HEAD % orjson.dumps(display) + b",".join(entries) + INLINE_TAIL


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk


def _json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer; ProviderError with Gemini's status and error `status` otherwise."""
    try:
        payload = response.json() if response.content else {}
    except ValueError:
        payload = None
    if response.status_code < 400 and isinstance(payload, dict):
        return payload
    error = lenient.mapping(payload.get("error")) if isinstance(payload, dict) else {}
    message = lenient.text(error.get("message")) or response.text[:500]
    code = lenient.text(error.get("status"))
    details = error.get("details")
    reasons = {
        lenient.text(detail.get("reason"))
        for detail in (details if isinstance(details, list) else [])
        if isinstance(detail, dict)
    }
    account = code in ACCOUNT_STATUSES or bool(reasons & ACCOUNT_REASONS)
    raise ProviderError(
        response.status_code,
        message,
        code=code,
        classification=ErrorClass.ACCOUNT_PROBLEM if account else None,
    )


google_answer = _json  # Google's error shape, shared by the Vertex AI adapter (vertex_batch, vertex_gcs)


def _batch(operation: Mapping[str, Any]) -> dict[str, Any]:
    """The batch an Operation describes (its `metadata`); a bare batch object is taken as it is."""
    inner = operation.get("metadata")
    return inner if isinstance(inner, dict) and "state" in inner else dict(operation)


def _output(operation: Mapping[str, Any]) -> dict[str, Any]:
    response = lenient.mapping(operation.get("response"))
    return response or lenient.mapping(_batch(operation).get("output"))


def batch_info(operation: Any, *, metadata: Mapping[str, str] | None = None) -> BatchInfo:
    """A batch Operation (or a bare batch) as BatchInfo. Once it has ended with results, `output_file_id` is
    the responses file's name, or the batch's own name when the responses are inline."""
    if not isinstance(operation, dict):
        raise lenient.malformed("batch operation", operation)
    batch = _batch(operation)
    batch_id = lenient.text(operation.get("name")) or lenient.text(batch.get("name"))
    if batch_id is None:
        raise lenient.malformed("batch operation (no name)", operation)
    state = lenient.batch_state(batch.get("state"), STATES)
    stats = lenient.mapping(batch.get("batchStats"))
    output = _output(operation)
    results: str | None = None
    if state.is_terminal:
        results = lenient.text(output.get("responsesFile")) or (batch_id if output.get("inlinedResponses") else None)
    error = lenient.mapping(operation.get("error"))
    message = lenient.text(error.get("message"))
    return BatchInfo(
        batch_id=batch_id,
        state=state,
        created_at=lenient.timestamp(batch.get("createTime")) or 0.0,
        metadata=dict(metadata or {}),
        total=lenient.count(stats.get("requestCount")),
        completed=(lenient.count(stats.get("successfulRequestCount")) or 0) if stats else None,
        failed=(lenient.count(stats.get("failedRequestCount")) or 0) if stats else None,
        output_file_id=results,
        errors=message,
        issues=(BatchIssue(lenient.text(error.get("status")), message),) if message else (),
    )


def result_line(key: str | None, item: Mapping[str, Any], model: str) -> ResultLine | None:
    """One response entry (`{"response"}` or `{"error"}`) as a ResultLine; None when it names no key."""
    if key is None:
        return None
    response = item.get("response")
    if isinstance(response, dict):
        try:
            body = chat_completion(response, model=model)
        except Exception as exc:  # litellm raises many types for a response it cannot read
            log.warning("an unreadable Gemini batch response for %s: %s", key, exc)
            return _errored(key, 502, "The provider's answer could not be read.", "malformed_response")
        return ResultLine(key, LineOutcome.SUCCEEDED, 200, body, request_id=lenient.text(response.get("responseId")))
    error = lenient.mapping(item.get("error"))
    status = lenient.count(error.get("code")) or 500
    message = lenient.text(error.get("message")) or "The request failed."
    return _errored(key, status, message, lenient.text(error.get("status")))


async def joined_embeddings(
    items: AsyncIterator[tuple[str | None, dict[str, Any]]], model: str
) -> AsyncIterator[ResultLine]:
    """Embedding responses joined into one ResultLine per job: a CreateEmbeddingResponse once every input of the
    job has answered, or the first error among them. A job some of whose answers never came gets no line."""
    pending: dict[str, JoinedEmbedding] = {}
    failed: set[str] = set()
    async for key, item in items:
        place = part_key(key) if key is not None else None
        if place is None:
            lenient.skipped_line("no embedding key", orjson.dumps(item))
            continue
        if place.custom_id in failed:
            continue
        response = item.get("response")
        joined = pending.setdefault(place.custom_id, JoinedEmbedding(place))
        try:
            if not isinstance(response, dict):
                raise ValueError("no response")
            joined.add(place.index, response)
        except (ValueError, TypeError):
            pending.pop(place.custom_id, None)
            failed.add(place.custom_id)
            error = lenient.mapping(item.get("error"))
            if not error:
                yield _errored(place.custom_id, 502, "The provider's answer could not be read.", "malformed_response")
                continue
            status = lenient.count(error.get("code")) or 500
            message = lenient.text(error.get("message")) or "The request failed."
            yield _errored(place.custom_id, status, message, lenient.text(error.get("status")))
            continue
        if joined.complete:
            del pending[place.custom_id]
            yield ResultLine(place.custom_id, LineOutcome.SUCCEEDED, 200, joined.response(model))


def _errored(key: str, status: int, message: str, code: str | None) -> ResultLine:
    error_type = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = error_body(message, error_type, code=code)
    return ResultLine(key, LineOutcome.ERRORED, status, body, error_code=code, error_message=message)
