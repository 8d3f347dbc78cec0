"""OpenAI's files + batches API over httpx (also Azure, vLLM, Groq, the simulator: the same wire format).

Uploads stream from a file on disk and result files are read line by line, so a 50,000-line batch is never
held whole in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from proxy.providers import lenient
from proxy.providers.base import (
    BatchInfo,
    BatchIssue,
    BatchState,
    LineOutcome,
    PreparedInput,
    ProviderError,
    ResultLine,
    bad_line,
)
from proxy.providers.batch_http import answer_json, batch_http, json_or_raise, provider_errors
from proxy.providers.upstream_body import without_unstored_metadata

log = logging.getLogger("batchgate.providers.openai_batch")

CHAT_ENDPOINT = "/v1/chat/completions"
LIST_PAGE = 100
MAX_LIST_PAGES = 50
CLOCK_SKEW = 60.0
DEFAULT_FILE_EXPIRY = 7 * 24 * 3600  # seconds; OpenAI takes 3600..2592000
UNFINISHED_CODES = {"batch_expired": LineOutcome.EXPIRED, "batch_cancelled": LineOutcome.CANCELLED}
DROPPED_FIELDS = ("stream", "stream_options")
RESPONSES_ENDPOINT = "/v1/responses"
MAX_FILE_BYTES = 200 * 1024 * 1024  # an input file's limit, so a line's too
# "/v1/embeddings batches are also restricted to a maximum of 50,000 embedding inputs across all requests in the
# batch" (OpenAI's API reference, POST /v1/batches, `endpoint`)
MAX_EMBEDDING_INPUTS = 50_000


class OpenAIBatchClient:
    """Files + batches for one deployment: `upstream_model` replaces each body's model; `completion_window` is
    sent with every batch (OpenAI accepts only "24h"); `file_expiry` (seconds, None: the provider's default) is
    sent as the upload's `expires_after` and the batch's `output_expires_after`, both anchored at `created_at`.

    OpenAI-shaped providers that differ only in how they are addressed give `auth_headers` (instead of
    `Authorization: Bearer <api_key>`), `params` (a query string sent with every call, e.g. Azure's
    `api-version`) and `endpoint` (the batch's endpoint and every line's `url`)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        upstream_model: str,
        timeout: float = 60.0,
        completion_window: str = "24h",
        file_expiry: int | None = DEFAULT_FILE_EXPIRY,
        auth_headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        endpoint: str = CHAT_ENDPOINT,
    ) -> None:
        if auth_headers is not None:
            headers = dict(auth_headers)
        else:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = batch_http(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout, params=params)
        self._endpoint = endpoint
        self._model = upstream_model
        self._completion_window = completion_window
        self._file_expiry = file_expiry
        self._endpoint = endpoint

    async def prepare(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], *, metadata: Mapping[str, str]
    ) -> PreparedInput:
        """Stream the requests as JSONL lines to a temporary file, upload it and delete it; `ref` is the file id."""
        handle, name = tempfile.mkstemp(prefix="batchgate-", suffix=".jsonl")
        path = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:
                count = 0
                async for custom_id, body in requests:
                    out.write(self.encode(custom_id, body))
                    count += 1
            if count == 0:
                return PreparedInput("", 0)
            form = {"purpose": "batch"}
            if self._file_expiry is not None:  # multipart spelling of expires_after, as the openai SDK sends it
                form |= {"expires_after[anchor]": "created_at", "expires_after[seconds]": str(self._file_expiry)}
            with provider_errors(), _reader(path) as upload:
                response = await self._http.post(
                    "files", data=form, files={"file": (path.name, upload, "application/jsonl")}
                )
            uploaded = json_or_raise(response)
            file_id = lenient.identifier(uploaded.get("id"))
            if file_id is None:
                raise lenient.malformed("file object (no id)", uploaded)
            return PreparedInput(file_id, count)
        finally:
            _remove(path)

    def encode(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        """One line of the input file (the provider's line shape; raises ProviderError(BAD_LINE))."""
        return encode_line(custom_id, body, model=self._model, url=self._endpoint)

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        payload: dict[str, Any] = {
            "input_file_id": prepared,
            "endpoint": self._endpoint,
            "completion_window": self._completion_window,
            "metadata": dict(metadata),
        }
        if self._file_expiry is not None:
            payload["output_expires_after"] = {"anchor": "created_at", "seconds": self._file_expiry}
        return batch_info(await answer_json(self._http.post("batches", json=payload)))

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_info(await answer_json(self._http.get(f"batches/{batch_id}")))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return batch_info(await answer_json(self._http.post(f"batches/{batch_id}/cancel")))

    async def cleanup(self, prepared: str) -> None:
        """Delete the uploaded input file (a file already gone is fine)."""
        if not prepared:
            return
        with provider_errors():
            response = await self._http.delete(f"files/{prepared}")
        if response.status_code != 404:
            json_or_raise(response)

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """Batches (newest first, back to `since`) whose metadata carries every given pair and whose input is
        `prepared`."""
        found: list[BatchInfo] = []
        params: dict[str, str | int] = {"limit": LIST_PAGE}
        for _ in range(MAX_LIST_PAGES):
            page = await answer_json(self._http.get("batches", params=params))
            data = [item for item in _list(page.get("data")) if isinstance(item, dict)]
            for item in data:
                labels = lenient.mapping(item.get("metadata"))
                if item.get("input_file_id") == prepared and all(labels.get(k) == v for k, v in metadata.items()):
                    try:
                        found.append(batch_info(item))
                    except ProviderError as exc:  # one unreadable batch in a listing hides only itself
                        log.warning("skipping an unreadable listed batch: %s", exc)
            oldest = lenient.timestamp(data[-1].get("created_at")) if data else None
            older = oldest is not None and oldest < since - CLOCK_SKEW
            after = lenient.identifier(data[-1].get("id")) if data else None
            if not page.get("has_more") or after is None or older:
                break
            params["after"] = after
        return found

    async def results(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The output file's lines, then the error file's, streamed and parsed one by one."""
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            with provider_errors():
                async with self._http.stream("GET", f"files/{file_id}/content") as response:
                    if response.status_code >= 400:
                        await response.aread()
                        json_or_raise(response)
                    async for text in response.aiter_lines():
                        if text.strip() and (line := parse_result_line(text)) is not None:
                            yield line

    async def aclose(self) -> None:
        await self._http.aclose()


def encode_line(custom_id: str, body: Mapping[str, Any], *, model: str, url: str = CHAT_ENDPOINT) -> bytes:
    """One JSONL line of a batch input file (newline included): the body as a synchronous call sends it, with the
    upstream `model`, no streaming fields, and `metadata` only with `store: true`; `url` is the batch's endpoint.
    A body that does not encode raises ProviderError(BAD_LINE, custom_id=...): that job fails alone, never the
    batch or the worker."""
    sent = {**(sent_body(body) if url != RESPONSES_ENDPOINT else _unstreamed(body)), "model": model}
    return dump_line({"custom_id": custom_id, "method": "POST", "url": url, "body": sent}, custom_id)


def sent_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A body as a batch line carries it: no streaming fields, `metadata` only with `store: true`."""
    return {key: value for key, value in without_unstored_metadata(body).items() if key not in DROPPED_FIELDS}


def _unstreamed(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses body as a batch line carries it: its `metadata` kept (the Responses API takes it unstored)."""
    return {key: value for key, value in body.items() if key not in DROPPED_FIELDS}


def dump_line(line: Mapping[str, Any], custom_id: str) -> bytes:
    """A JSONL line (newline included); ProviderError(BAD_LINE, custom_id=...) when it does not encode."""
    try:
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, ValueError, RecursionError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise bad_line(custom_id, f"The request body cannot be written as a batch line: {exc}.") from None


def embedding_inputs(body: Mapping[str, Any]) -> int:
    """How many embedding inputs a `/v1/embeddings` body carries (what OpenAI's per-batch limit counts): one for a
    string or a token array, else the array's length."""
    value = body.get("input")
    if not isinstance(value, list) or not value or isinstance(value[0], int):
        return 1
    return len(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _reader(path: Path) -> BinaryIO:
    return path.open("rb")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


STATES = {
    "validating": BatchState.VALIDATING,
    "queued": BatchState.VALIDATING,
    "inprogress": BatchState.IN_PROGRESS,
    "running": BatchState.IN_PROGRESS,
    "finalizing": BatchState.FINALIZING,
    "completed": BatchState.COMPLETED,
    "succeeded": BatchState.COMPLETED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelling": BatchState.CANCELLING,
    "canceling": BatchState.CANCELLING,
    "cancelled": BatchState.CANCELLED,
    "canceled": BatchState.CANCELLED,
}  # keyed by lenient.status_key: OpenAI's, Azure's `Validating`, Together's `IN_PROGRESS` all fold to these


def batch_info(item: Any) -> BatchInfo:
    """The one reader of an OpenAI-shaped batch object (also Azure's, Together's `{"job": {...}}` wrapper and
    xAI's `batch_id` + `state` counters): lenient in every field (see proxy.providers.lenient). Raises
    ProviderError (TRANSIENT, code `malformed_response`) when the object has no readable id."""
    if isinstance(item, dict) and "id" not in item and isinstance(item.get("job"), dict):
        item = item["job"]
    if not isinstance(item, dict):
        raise lenient.malformed("batch object", item)
    batch_id = lenient.identifier(item.get("id")) or lenient.identifier(item.get("batch_id"))
    if batch_id is None:
        raise lenient.malformed("batch object (no id)", item)
    total, completed, failed = _counts(item)
    usage = item.get("usage")
    return BatchInfo(
        batch_id=batch_id,
        state=lenient.batch_state(item.get("status"), STATES),
        created_at=lenient.timestamp(item.get("created_at")) or lenient.timestamp(item.get("create_time")) or 0.0,
        metadata=lenient.string_pairs(item.get("metadata")),
        total=total,
        completed=completed,
        failed=failed,
        output_file_id=lenient.identifier(item.get("output_file_id")),
        error_file_id=lenient.identifier(item.get("error_file_id")),
        errors=_errors_text(item.get("errors")),
        issues=_issues(item.get("errors")),
        input_tokens=lenient.count(usage.get("input_tokens")) if isinstance(usage, dict) else None,
        output_tokens=lenient.count(usage.get("output_tokens")) if isinstance(usage, dict) else None,
    )


def _counts(item: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(total, completed, failed) from OpenAI's `request_counts` or xAI's `state` counters; None where unknown."""
    counts = item.get("request_counts")
    if isinstance(counts, dict):
        return (
            lenient.count(counts.get("total")),
            lenient.count(counts.get("completed")),
            lenient.count(counts.get("failed")),
        )
    counters = item.get("state")
    if isinstance(counters, dict):
        errors, cancelled = lenient.count(counters.get("num_error")), lenient.count(counters.get("num_cancelled"))
        failed = None if errors is None else errors + (cancelled or 0)
        return lenient.count(counters.get("num_requests")), lenient.count(counters.get("num_success")), failed
    return None, None, None


def _errors_text(errors: Any) -> str | None:
    if not isinstance(errors, dict):
        return None
    data = errors.get("data")
    messages = [
        (f"line {entry['line']}: " if entry.get("line") else "") + str(entry.get("message"))
        for entry in (data if isinstance(data, list) else [])
        if isinstance(entry, dict)
    ]
    return "; ".join(messages) or None


def _issues(errors: Any) -> tuple[BatchIssue, ...]:
    """`errors.data[]` as BatchIssues; an input file holds one request per line, so its line number is the
    request's position."""
    data = errors.get("data") if isinstance(errors, dict) else None
    return tuple(
        BatchIssue(lenient.text(entry.get("code")), str(entry.get("message") or ""), lenient.count(entry.get("line")))
        for entry in (data if isinstance(data, list) else [])
        if isinstance(entry, dict)
    )


def parse_result_line(raw: str | bytes) -> ResultLine | None:
    """One line of an output or error file, or None (logged) for a line that is not a JSON object with a
    custom_id: its job then has no line, and the batch's missing-line rules answer it."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        lenient.skipped_line("not JSON", raw)
        return None
    line = result_line(item)
    if line is None:
        lenient.skipped_line("no custom_id", raw)
    return line


def result_line(item: Any) -> ResultLine | None:
    """A parsed output/error line as a ResultLine; None when it names no custom_id."""
    custom_id = lenient.identifier(item.get("custom_id")) if isinstance(item, dict) else None
    if custom_id is None:
        return None
    response = item.get("response")
    if isinstance(response, dict):
        status = lenient.count(response.get("status_code")) or 0
        raw_body = response.get("body")
        body = raw_body if isinstance(raw_body, dict) else None
        request_id = lenient.text(response.get("request_id"))
        if 200 <= status < 300 and body is not None:
            return ResultLine(custom_id, LineOutcome.SUCCEEDED, status, body, request_id=request_id)
        found = body.get("error") if body is not None else None
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        return ResultLine(
            custom_id,
            LineOutcome.ERRORED,
            status,
            body,
            error_code=lenient.text(error.get("code")) or lenient.text(error.get("type")),
            error_message=lenient.text(error.get("message")),
            request_id=request_id,
        )
    unfinished = lenient.mapping(item.get("error"))
    code = lenient.text(unfinished.get("code"))
    return ResultLine(
        custom_id,
        UNFINISHED_CODES.get(str(code), LineOutcome.ERRORED),
        None,
        None,
        error_code=code,
        error_message=lenient.text(unfinished.get("message")),
    )
