"""Anthropic Message Batches over httpx, behind the same BatchClient protocol as OpenAI's files + batches.

Anthropic takes a batch as one JSON body, not an uploaded file. `upload_file` therefore stages it locally: it
reads the OpenAI-style JSONL the submitter wrote, translates each line into Messages params and streams
`{"requests": [...]}` to a staging file; `create_batch` streams that file as the request body (never the whole
batch in memory) and then deletes it. The staged file's name is the "file id".

Finding a batch again after a crash (`find_batches`): Anthropic batches carry no metadata and listing them shows
no custom_ids, so a lookup by our batch id cannot ask the provider. The client keeps a small journal next to the
staged files instead, one entry per metadata pair: the intent (request count, time sent) is written before the
create call and the provider's batch id right after it answers. Recovery reads the entry: with an id it is
exact; with only the intent (the process died while the create call was in flight) it lists recent batches and
takes the one created in that window with the same request count, if exactly one fits. What cannot be
recovered: a crash on another host (the journal and the staged file are local: the submitter then builds and
creates the batch again, so the first batch is paid for and its results ignored; answers stay exactly-once),
and an ambiguous window (the same outcome).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from proxy.providers.anthropic_format import chat_completion, chat_error, messages_params
from proxy.providers.base import BatchInfo, BatchState, LineOutcome, ResultLine
from proxy.providers.openai_batch import BatchApiError, json_or_raise

ANTHROPIC_VERSION = "2023-06-01"
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
STAGED_PREFIX = "staged-"
READ_CHUNK = 1 << 20
LIST_PAGE = 100
MAX_LIST_PAGES = 20
JOURNAL_TTL = 3 * 86_400.0  # a batch expires 24 h after creation: older entries can no longer matter
CLOCK_SKEW = 60.0

OUTCOMES = {
    "succeeded": LineOutcome.SUCCEEDED,
    "errored": LineOutcome.ERRORED,
    "canceled": LineOutcome.CANCELLED,
    "expired": LineOutcome.EXPIRED,
}


def default_staging_dir() -> Path:
    return Path(tempfile.gettempdir()) / "batchgate-anthropic"


class AnthropicBatchClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float = 60.0,
        staging_dir: Path | None = None,
    ) -> None:
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        root = base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.AsyncClient(base_url=root + "/v1/", headers=headers, timeout=timeout)
        self._timeout = timeout
        self._staging = staging_dir or default_staging_dir()

    # staging

    async def upload_file(self, path: Path, *, filename: str) -> str:
        """Translate the JSONL at `path` into a staged request body; the staged file's name is the file id."""
        self._staging.mkdir(parents=True, exist_ok=True)
        file_id = f"{STAGED_PREFIX}{uuid.uuid4().hex}"
        staged = self._staged_path(file_id)
        try:
            count = _stage(path, staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        staged.with_suffix(".count").write_text(str(count))
        return file_id

    def _staged_path(self, file_id: str) -> Path:
        if not file_id.startswith(STAGED_PREFIX) or not file_id.removeprefix(STAGED_PREFIX).isalnum():
            raise BatchApiError(404, f"No staged batch input {file_id!r}.", code="not_found_error")
        return self._staging / f"{file_id}.json"

    async def create_batch(self, input_file_id: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        staged = self._staged_path(input_file_id)
        if not staged.exists():  # staged by another host or already sent: the submitter builds it again
            raise BatchApiError(404, f"No staged batch input {input_file_id!r} on this host.", code="not_found_error")
        count = int(staged.with_suffix(".count").read_text() or 0)
        sent_at = time.time()
        self._journal(metadata, {"requests": count, "sent_at": sent_at, "metadata": dict(metadata)})
        response = await self._http.post(
            "messages/batches",
            content=_chunks(staged),
            headers={"content-length": str(staged.stat().st_size)},
        )
        info = batch_info(_json(response), metadata=metadata)
        self._journal(metadata, {"requests": count, "sent_at": sent_at, "metadata": dict(metadata),
                                 "batch_id": info.batch_id})  # fmt: skip
        for leftover in (staged, staged.with_suffix(".count")):
            leftover.unlink(missing_ok=True)
        return info

    # the batch

    async def retrieve_batch(self, batch_id: str) -> BatchInfo:
        return batch_info(_json(await self._http.get(f"messages/batches/{batch_id}")))

    async def cancel_batch(self, batch_id: str) -> BatchInfo:
        return batch_info(_json(await self._http.post(f"messages/batches/{batch_id}/cancel")))

    async def result_lines(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The results JSONL, streamed line by line, each body translated into an OpenAI chat.completion.
        Read from our own base URL (not `results_url`), so the key never goes to another host."""
        if not batch.batch_id or not batch.output_file_id:
            return
        async with self._http.stream("GET", f"messages/batches/{batch.batch_id}/results") as response:
            if response.status_code >= 400:
                await response.aread()
                _json(response)
            async for text in response.aiter_lines():
                if text.strip():
                    yield result_line(orjson.loads(text))

    # crash reconciliation

    async def find_batches(self, *, metadata_key: str, metadata_value: str) -> list[BatchInfo]:
        entry = self._journal_entry(metadata_key, metadata_value)
        if entry is None:
            return []
        metadata = entry.get("metadata") or {}
        batch_id = entry.get("batch_id")
        if isinstance(batch_id, str):
            try:
                return [_with_metadata(await self.retrieve_batch(batch_id), metadata)]
            except BatchApiError as exc:
                if exc.status == 404:
                    return []
                raise
        found = await self._created_in_window(float(entry["sent_at"]), int(entry["requests"]))
        if len(found) != 1:
            return []
        self._journal(metadata, {**entry, "batch_id": found[0].batch_id})
        return [_with_metadata(found[0], metadata)]

    async def _created_in_window(self, sent_at: float, requests: int) -> list[BatchInfo]:
        """Batches created while a create call sent at `sent_at` may have been in flight, of that size."""
        earliest, latest = sent_at - CLOCK_SKEW, sent_at + self._timeout + CLOCK_SKEW
        found: list[BatchInfo] = []
        params: dict[str, str | int] = {"limit": LIST_PAGE}
        for _ in range(MAX_LIST_PAGES):
            page = _json(await self._http.get("messages/batches", params=params))
            data = page.get("data") or []
            for item in data:
                info = batch_info(item)
                if earliest <= info.created_at <= latest and info.total == requests:
                    found.append(info)
            if not page.get("has_more") or not data or batch_info(data[-1]).created_at < earliest:
                break
            params["after_id"] = data[-1]["id"]
        return found

    def _journal_path(self, key: str, value: str) -> Path:
        digest = hashlib.sha256(f"{key}\0{value}".encode()).hexdigest()[:40]
        return self._staging / "journal" / f"{digest}.json"

    def _journal(self, metadata: Mapping[str, str], entry: Mapping[str, Any]) -> None:
        directory = self._staging / "journal"
        directory.mkdir(parents=True, exist_ok=True)
        _prune(directory)
        raw = orjson.dumps(entry)
        for key, value in metadata.items():
            path = self._journal_path(key, value)
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(raw)
            temporary.replace(path)

    def _journal_entry(self, key: str, value: str) -> dict[str, Any] | None:
        try:
            entry = orjson.loads(self._journal_path(key, value).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return entry if isinstance(entry, dict) else None

    async def aclose(self) -> None:
        await self._http.aclose()


def _stage(source: Path, staged: Path) -> int:
    """Write `{"requests": [...]}` for the OpenAI-style JSONL at `source`; the number of requests."""
    count = 0
    size = len(b'{"requests":[]}')
    with source.open("rb") as lines, staged.open("wb") as out:
        out.write(b'{"requests":[')
        for raw in lines:
            if not raw.strip():
                continue
            item = orjson.loads(raw)
            custom_id = str(item.get("custom_id", ""))
            if not CUSTOM_ID.match(custom_id):
                raise BatchApiError(400, f"custom_id {custom_id!r} does not match {CUSTOM_ID.pattern}")
            request = orjson.dumps({"custom_id": custom_id, "params": messages_params(item.get("body") or {})})
            count += 1
            size += len(request) + (1 if count > 1 else 0)
            if count > MAX_REQUESTS or size > MAX_BODY_BYTES:
                raise BatchApiError(
                    413, f"A Message Batch takes at most {MAX_REQUESTS} requests and {MAX_BODY_BYTES} bytes."
                )
            if count > 1:
                out.write(b",")
            out.write(request)
        out.write(b"]}")
    return count


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk


def _prune(directory: Path) -> None:
    horizon = time.time() - JOURNAL_TTL
    with os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < horizon:
                    os.unlink(entry.path)


def _json(response: httpx.Response) -> dict[str, Any]:
    return json_or_raise(response, code_field="type")  # Anthropic names its error code `type`


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def batch_state(item: Mapping[str, Any]) -> BatchState:
    """Anthropic's processing_status, made precise: an ended batch was cancelled, expired or completed."""
    status = item.get("processing_status")
    if status == "canceling":
        return BatchState.CANCELLING
    if status != "ended":
        return BatchState.IN_PROGRESS
    counts = item.get("request_counts") or {}
    if item.get("cancel_initiated_at"):
        return BatchState.CANCELLED
    if int(counts.get("expired") or 0) > 0:
        return BatchState.EXPIRED
    return BatchState.COMPLETED


def batch_info(item: Mapping[str, Any], *, metadata: Mapping[str, str] | None = None) -> BatchInfo:
    counts = item.get("request_counts") or {}
    succeeded, errored, canceled, expired, processing = (
        int(counts.get(key) or 0) for key in ("succeeded", "errored", "canceled", "expired", "processing")
    )
    return BatchInfo(
        batch_id=str(item["id"]),
        state=batch_state(item),
        created_at=_timestamp(item.get("created_at")) or 0.0,
        metadata=dict(metadata or {}),
        total=processing + succeeded + errored + canceled + expired,
        completed=succeeded,
        failed=errored + canceled + expired,
        output_file_id=item.get("results_url") if item.get("processing_status") == "ended" else None,
    )


def _with_metadata(info: BatchInfo, metadata: Mapping[str, str]) -> BatchInfo:
    return BatchInfo(
        batch_id=info.batch_id,
        state=info.state,
        created_at=info.created_at,
        metadata=dict(metadata),
        total=info.total,
        completed=info.completed,
        failed=info.failed,
        output_file_id=info.output_file_id,
    )


def result_line(item: Mapping[str, Any]) -> ResultLine:
    custom_id = str(item.get("custom_id"))
    result = item.get("result") or {}
    outcome = OUTCOMES.get(str(result.get("type")), LineOutcome.ERRORED)
    if outcome is LineOutcome.SUCCEEDED:
        return ResultLine(custom_id, outcome, 200, chat_completion(result.get("message") or {}))
    if outcome is LineOutcome.ERRORED:
        wrapper = result.get("error") or {}
        inner = wrapper.get("error")
        error: Mapping[str, Any] = inner if isinstance(inner, dict) else wrapper
        status, body = chat_error(error)
        return ResultLine(
            custom_id,
            outcome,
            status,
            body,
            error_code=str(error.get("type")),
            error_message=str(error.get("message", "")),
        )
    message = (
        "The request was not processed because the batch was cancelled."
        if outcome is LineOutcome.CANCELLED
        else "The request was not processed before the batch expired."
    )
    code = "batch_cancelled" if outcome is LineOutcome.CANCELLED else "batch_expired"
    return ResultLine(custom_id, outcome, None, None, error_code=code, error_message=message)
