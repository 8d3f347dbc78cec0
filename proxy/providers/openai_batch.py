"""OpenAI's files + batches API over httpx (also Azure, vLLM, Groq, the simulator: the same wire format).

Uploads stream from a file on disk and result files are read line by line, so a 50,000-line batch is never
held whole in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from proxy.providers.base import (
    BatchInfo,
    BatchState,
    ErrorClass,
    LineOutcome,
    PreparedInput,
    ProviderError,
    ResultLine,
)
from proxy.providers.batch_http import batch_http, json_or_raise, provider_errors
from proxy.providers.upstream_body import without_unstored_metadata

CHAT_ENDPOINT = "/v1/chat/completions"
LIST_PAGE = 100
MAX_LIST_PAGES = 50
CLOCK_SKEW = 60.0
UNFINISHED_CODES = {"batch_expired": LineOutcome.EXPIRED, "batch_cancelled": LineOutcome.CANCELLED}
DROPPED_FIELDS = ("stream", "stream_options")
MAX_FILE_BYTES = 200 * 1024 * 1024  # an input file's limit, so a line's too


class OpenAIBatchClient:
    """Files + batches for one deployment: `upstream_model` replaces each body's model; `completion_window` is
    sent with every batch (OpenAI accepts only "24h")."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        upstream_model: str,
        timeout: float = 60.0,
        completion_window: str = "24h",
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = batch_http(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout)
        self._model = upstream_model
        self._completion_window = completion_window

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
                    out.write(encode_line(custom_id, body, model=self._model))
                    count += 1
            if count == 0:
                return PreparedInput("", 0)
            with provider_errors(), _reader(path) as upload:
                response = await self._http.post(
                    "files", data={"purpose": "batch"}, files={"file": (path.name, upload, "application/jsonl")}
                )
            return PreparedInput(str(json_or_raise(response)["id"]), count)
        finally:
            _remove(path)

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        payload = {
            "input_file_id": prepared,
            "endpoint": CHAT_ENDPOINT,
            "completion_window": self._completion_window,
            "metadata": dict(metadata),
        }
        with provider_errors():
            response = await self._http.post("batches", json=payload)
        return batch_info(json_or_raise(response))

    async def retrieve(self, batch_id: str) -> BatchInfo:
        with provider_errors():
            response = await self._http.get(f"batches/{batch_id}")
        return batch_info(json_or_raise(response))

    async def cancel(self, batch_id: str) -> BatchInfo:
        with provider_errors():
            response = await self._http.post(f"batches/{batch_id}/cancel")
        return batch_info(json_or_raise(response))

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
            with provider_errors():
                response = await self._http.get("batches", params=params)
            page = json_or_raise(response)
            data = page.get("data") or []
            for item in data:
                labels = item.get("metadata") or {}
                if item.get("input_file_id") == prepared and all(labels.get(k) == v for k, v in metadata.items()):
                    found.append(batch_info(item))
            older = bool(data) and float(data[-1].get("created_at") or 0) < since - CLOCK_SKEW
            if not page.get("has_more") or not data or older:
                break
            params["after"] = data[-1]["id"]
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
                        if text.strip():
                            yield result_line(orjson.loads(text))

    async def aclose(self) -> None:
        await self._http.aclose()


def encode_line(custom_id: str, body: Mapping[str, Any], *, model: str) -> bytes:
    """One JSONL line of a batch input file (newline included): the body as a synchronous call sends it, with the
    upstream `model`, no streaming fields, and `metadata` only with `store: true`. A body that does not encode
    raises ProviderError(BAD_LINE, custom_id=...): that job fails alone, never the batch or the worker."""
    sent = {key: value for key, value in without_unstored_metadata(body).items() if key not in DROPPED_FIELDS}
    sent["model"] = model
    line = {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": sent}
    try:
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, ValueError, RecursionError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise ProviderError(
            400,
            f"The request body cannot be written as a batch line: {exc}.",
            code="invalid_batch_line",
            classification=ErrorClass.BAD_LINE,
            custom_id=custom_id,
        ) from None


def _reader(path: Path) -> BinaryIO:
    return path.open("rb")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def batch_info(item: Mapping[str, Any]) -> BatchInfo:
    counts = item.get("request_counts") or {}
    return BatchInfo(
        batch_id=item["id"],
        state=BatchState(item["status"]),
        created_at=float(item.get("created_at") or 0),
        metadata=dict(item.get("metadata") or {}),
        total=int(counts.get("total") or 0),
        completed=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        output_file_id=item.get("output_file_id"),
        error_file_id=item.get("error_file_id"),
        errors=_errors_text(item.get("errors")),
    )


def _errors_text(errors: Any) -> str | None:
    if not isinstance(errors, dict):
        return None
    messages = [
        (f"line {entry['line']}: " if entry.get("line") else "") + str(entry.get("message"))
        for entry in errors.get("data") or []
        if isinstance(entry, dict)
    ]
    return "; ".join(messages) or None


def result_line(item: Mapping[str, Any]) -> ResultLine:
    custom_id = str(item.get("custom_id"))
    response = item.get("response")
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        request_id = response.get("request_id") if isinstance(response.get("request_id"), str) else None
        if 200 <= status < 300:
            return ResultLine(custom_id, LineOutcome.SUCCEEDED, status, body, request_id=request_id)
        found = body.get("error") if isinstance(body, dict) else None
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        return ResultLine(
            custom_id,
            LineOutcome.ERRORED,
            status,
            body if isinstance(body, dict) else None,
            error_code=error.get("code") or error.get("type"),
            error_message=error.get("message"),
            request_id=request_id,
        )
    raw_error = item.get("error")
    unfinished: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = unfinished.get("code")
    return ResultLine(
        custom_id,
        UNFINISHED_CODES.get(str(code), LineOutcome.ERRORED),
        None,
        None,
        error_code=code,
        error_message=unfinished.get("message"),
    )
