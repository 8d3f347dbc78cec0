"""Anthropic Message Batches over httpx, behind the same BatchClient protocol as OpenAI's files + batches.

Anthropic takes a batch as one JSON body, not an uploaded file. `prepare` therefore stages it on local disk:
each `(custom_id, body)` pair becomes one Messages request in `{"requests": [...]}`, streamed to a staging file;
`create` streams that file as the request body (never the whole batch in memory) and then deletes it; the
`anthropic-beta` features its lines need (structured outputs, say) are noted beside it and sent with it. The
prepared ref names the staged file and the number of requests in it. A ref staged on another host (or lost with
a restart) is NOT_FOUND, and the submitter prepares the batch again.

Finding a batch again after a crash (`find_batches`), on any host, from what the provider itself shows: Message
Batches carry no metadata, a listing shows only ids, times, statuses and request counts, and a batch's
custom_ids can only be read from its results, once it has ended. So every custom_id sent carries a marker: a
digest of the batch's metadata, appended as `-<12 hex>` (and taken off again in `results`). Recovery lists the
batches created since the submission began: an ended one is ours if its first result line carries our marker
(exact); one still in progress cannot be read, so it is taken as ours only if it is the one batch of that
window with our request count and no ended batch matched. Taking a wrong batch costs time, never an answer:
its lines name jobs ours does not own (or no batchgate job at all) and are skipped, and our jobs come back as
missing results to be sent again. When several batches in progress fit, none is taken and the batch is created
again: the first one is paid for and its results ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from proxy.providers import lenient
from proxy.providers.anthropic_format import chat_error
from proxy.providers.anthropic_translation import chat_completion, messages_request
from proxy.providers.base import (
    BatchInfo,
    BatchState,
    ErrorClass,
    LineOutcome,
    PreparedInput,
    ProviderError,
    ResultLine,
    bad_line,
)
from proxy.providers.batch_http import answer_json, batch_http, json_or_raise, provider_errors
from proxy.providers.claude_rules import ClaudeRefusal

log = logging.getLogger("batchgate.providers.anthropic_batch")

ANTHROPIC_VERSION = "2023-06-01"
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MARKER_LENGTH = 12
MARKED = re.compile(rf"^(?P<custom_id>.+)-(?P<marker>[0-9a-f]{{{MARKER_LENGTH}}})$")
PREPARED = re.compile(r"^staged-(?P<name>[0-9a-f]{32})-(?P<requests>[0-9]+)$")
READ_CHUNK = 1 << 20
LIST_PAGE = 100
MAX_LIST_PAGES = 20
CLOCK_SKEW = 60.0
BETA_HEADER = "anthropic-beta"
BETAS_SUFFIX = ".betas"  # beside a staged body: the anthropic-beta features its lines need, comma-separated

OUTCOMES = {
    "succeeded": LineOutcome.SUCCEEDED,
    "errored": LineOutcome.ERRORED,
    "canceled": LineOutcome.CANCELLED,
    "expired": LineOutcome.EXPIRED,
}


def default_staging_dir() -> Path:
    return Path(tempfile.gettempdir()) / "batchgate-anthropic"


def marker(metadata: Mapping[str, str]) -> str:
    """The upstream-visible mark of a batch's metadata, carried by each of its custom_ids."""
    canonical = orjson.dumps(dict(sorted(metadata.items())))
    return hashlib.sha256(canonical).hexdigest()[:MARKER_LENGTH]


def unmarked(custom_id: str) -> tuple[str, str | None]:
    """(custom_id as the caller gave it, marker or None)."""
    found = MARKED.match(custom_id)
    return (found["custom_id"], found["marker"]) if found else (custom_id, None)


def encode_request(
    wire_id: str,
    body: Mapping[str, Any],
    *,
    model: str,
    custom_id: str,
    extra_params: Mapping[str, Any] | None = None,
) -> tuple[bytes, frozenset[str]]:
    """One Message Batch request, `{"custom_id", "params"}`, for an OpenAI chat body, translated as the sync
    lane translates it (anthropic_translation.py), and the `anthropic-beta` features its params need. A body
    that does not translate or encode raises ProviderError(BAD_LINE, custom_id=custom_id): that job fails
    alone, never the batch or the worker."""
    try:
        request = messages_request(body, model=model, extra_params=extra_params or {})
        return orjson.dumps({"custom_id": wire_id, "params": request.params}), request.betas
    except ClaudeRefusal as exc:
        raise bad_line(custom_id, exc.message) from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        message = f"The request body cannot be written as a Message Batch request: {exc}."
        raise bad_line(custom_id, message) from None


class AnthropicBatchClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        upstream_model: str,
        timeout: float = 60.0,
        staging_dir: Path | None = None,
        extra_params: Mapping[str, Any] | None = None,
    ) -> None:
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        root = base_url.rstrip("/").removesuffix("/v1")
        self._http = batch_http(base_url=root + "/v1/", headers=headers, timeout=timeout)
        self._model = upstream_model
        self._extra = dict(extra_params or {})
        self._staging = staging_dir or default_staging_dir()

    # the input

    async def prepare(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], *, metadata: Mapping[str, str]
    ) -> PreparedInput:
        """Stage `{"requests": [...]}` on local disk; the ref names the staged file and its request count."""
        self._staging.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        staging = self._staging / f"{name}.part"
        try:
            betas: set[str] = set()
            count = await self._stage(requests, staging, marker(metadata), betas)
            if count == 0:
                staging.unlink()
                return PreparedInput("", 0)
            ref = f"staged-{name}-{count}"
            staged = self._staged_path(ref)
            staged.with_suffix(BETAS_SUFFIX).write_text(",".join(sorted(betas)))
            staging.replace(staged)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        return PreparedInput(ref, count)

    async def _stage(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], out_path: Path, mark: str, betas: set[str]
    ) -> int:
        """Write the requests to `out_path`; `betas` gathers the `anthropic-beta` features their lines need."""
        count = 0
        size = len(b'{"requests":[]}')
        with out_path.open("wb") as out:
            out.write(b'{"requests":[')
            async for custom_id, body in requests:
                wire_id = f"{custom_id}-{mark}"
                if not CUSTOM_ID.match(wire_id):
                    raise ProviderError(
                        400,
                        f"custom_id {custom_id!r} with its batch marker does not match {CUSTOM_ID.pattern}",
                        classification=ErrorClass.BAD_LINE,
                        custom_id=custom_id,
                    )
                # litellm's translation is CPU work of tens of milliseconds a line: off the event loop
                request, needed = await asyncio.to_thread(
                    encode_request, wire_id, body, model=self._model, custom_id=custom_id, extra_params=self._extra
                )
                betas.update(needed)
                count += 1
                size += len(request) + (1 if count > 1 else 0)
                if count > MAX_REQUESTS or size > MAX_BODY_BYTES:
                    raise ProviderError(
                        413,
                        f"A Message Batch takes at most {MAX_REQUESTS} requests and {MAX_BODY_BYTES} bytes.",
                        code="request_too_large",
                        classification=ErrorClass.BAD_REQUEST,
                    )
                if count > 1:
                    out.write(b",")
                out.write(request)
            out.write(b"]}")
        return count

    def _staged_path(self, prepared: str) -> Path:
        found = PREPARED.match(prepared)
        if found is None:
            raise ProviderError(404, f"No staged batch input {prepared!r}.", code="not_found_error")
        return self._staging / f"{found['name']}.json"

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        staged = self._staged_path(prepared)
        if not staged.exists():  # staged by another host or already sent: the submitter prepares it again
            raise ProviderError(404, f"No staged batch input {prepared!r} on this host.", code="not_found_error")
        headers = {"content-length": str(staged.stat().st_size)}
        betas = _read_betas(staged)
        if betas:  # a batch's beta features apply to every request in it
            headers[BETA_HEADER] = betas
        sent = self._http.post("messages/batches", content=_chunks(staged), headers=headers)
        info = batch_info(await answer_json(sent, read=_json), metadata=metadata)
        staged.unlink(missing_ok=True)
        staged.with_suffix(BETAS_SUFFIX).unlink(missing_ok=True)
        return info

    async def cleanup(self, prepared: str) -> None:
        """Remove a staged body that was never sent (create removes the ones it sends)."""
        if PREPARED.match(prepared):
            staged = self._staged_path(prepared)
            staged.unlink(missing_ok=True)
            staged.with_suffix(BETAS_SUFFIX).unlink(missing_ok=True)

    # the batch

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_info(await answer_json(self._http.get(f"messages/batches/{batch_id}"), read=_json))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return batch_info(await answer_json(self._http.post(f"messages/batches/{batch_id}/cancel"), read=_json))

    async def results(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The results JSONL, streamed line by line, each body translated into an OpenAI chat.completion and
        its custom_id unmarked. Read from our own base URL (not `results_url`), so the key never goes to
        another host."""
        if not batch.batch_id or not batch.output_file_id:
            return
        async for item in self._result_items(batch.batch_id):
            line = result_line(item)
            if line is None:
                lenient.skipped_line("no custom_id", orjson.dumps(item))
            else:
                yield line

    async def _result_items(self, batch_id: str) -> AsyncGenerator[Any]:
        """The results file's JSON values, one per line; a line that is not JSON is logged and skipped."""
        with provider_errors():
            async with self._http.stream("GET", f"messages/batches/{batch_id}/results") as response:
                if response.status_code >= 400:
                    await response.aread()
                    _json(response)
                async for text in response.aiter_lines():
                    if not text.strip():
                        continue
                    try:
                        yield orjson.loads(text)
                    except orjson.JSONDecodeError:
                        lenient.skipped_line("not JSON", text)

    # crash recovery

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """The batch created for `metadata` since `since`, if the provider shows it (see the module's notes)."""
        mark = marker(metadata)
        found = PREPARED.match(prepared)
        requests = int(found["requests"]) if found else None
        verified: list[BatchInfo] = []
        running: list[BatchInfo] = []
        async for info in self._created_since(since - CLOCK_SKEW):
            if info.state is BatchState.IN_PROGRESS or info.state is BatchState.CANCELLING:
                if info.total == requests:
                    running.append(info)
            elif await self._first_marker(info.batch_id) == mark:
                verified.append(info)
        chosen = verified or (running if len(running) == 1 else [])
        return [_with_metadata(info, metadata) for info in chosen]

    async def _created_since(self, earliest: float) -> AsyncIterator[BatchInfo]:
        params: dict[str, str | int] = {"limit": LIST_PAGE}
        for _ in range(MAX_LIST_PAGES):
            page = await answer_json(self._http.get("messages/batches", params=params), read=_json)
            data = page.get("data")
            data = data if isinstance(data, list) else []
            for item in data:
                try:
                    info = batch_info(item)
                except ProviderError as exc:  # one unreadable batch in a listing hides only itself
                    log.warning("skipping an unreadable listed batch: %s", exc)
                    continue
                if info.created_at < earliest:
                    return
                yield info
            after = lenient.identifier(data[-1].get("id")) if data and isinstance(data[-1], dict) else None
            if not page.get("has_more") or after is None:
                return
            params["after_id"] = after

    async def _first_marker(self, batch_id: str) -> str | None:
        async with contextlib.aclosing(self._result_items(batch_id)) as items:
            async for item in items:
                wire_id = lenient.identifier(item.get("custom_id")) if isinstance(item, dict) else None
                return unmarked(wire_id)[1] if wire_id is not None else None
        return None

    async def aclose(self) -> None:
        await self._http.aclose()


def _read_betas(staged: Path) -> str:
    """The `anthropic-beta` value a staged batch needs ("" for none, or a body staged without the note)."""
    try:
        return staged.with_suffix(BETAS_SUFFIX).read_text().strip()
    except FileNotFoundError:
        return ""


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk


def _json(response: httpx.Response) -> dict[str, Any]:
    return json_or_raise(response, code_field="type")  # Anthropic names its error code `type`


STATES = {
    "inprogress": BatchState.IN_PROGRESS,
    "canceling": BatchState.CANCELLING,
    "cancelling": BatchState.CANCELLING,
    "ended": BatchState.COMPLETED,  # made precise by batch_state
}
COUNT_KEYS = ("succeeded", "errored", "canceled", "expired", "processing")


def batch_state(item: Mapping[str, Any]) -> BatchState:
    """Anthropic's processing_status, made precise: an ended batch was cancelled, expired or completed. An
    unknown status is a batch still running (logged once per value)."""
    state = lenient.batch_state(item.get("processing_status"), STATES)
    if state is not BatchState.COMPLETED:
        return state
    if item.get("cancel_initiated_at"):
        return BatchState.CANCELLED
    if (lenient.count(lenient.mapping(item.get("request_counts")).get("expired")) or 0) > 0:
        return BatchState.EXPIRED
    return BatchState.COMPLETED


def batch_info(item: Any, *, metadata: Mapping[str, str] | None = None) -> BatchInfo:
    """The one reader of a Message Batch object, lenient in every field. Its counts stay zero until the whole
    batch has ended, so before that `completed` and `failed` are unknown (None), not zero. Raises ProviderError
    (TRANSIENT, code `malformed_response`) when the object has no readable id."""
    if not isinstance(item, dict):
        raise lenient.malformed("message batch", item)
    batch_id = lenient.identifier(item.get("id"))
    if batch_id is None:
        raise lenient.malformed("message batch (no id)", item)
    state = batch_state(item)
    raw_counts = item.get("request_counts")
    counts = {key: lenient.count(raw_counts.get(key)) for key in COUNT_KEYS} if isinstance(raw_counts, dict) else {}
    known = [value for value in counts.values() if value is not None]
    ended = state.is_terminal
    succeeded = counts.get("succeeded")
    failures = [counts.get(key) for key in ("errored", "canceled", "expired")]
    return BatchInfo(
        batch_id=batch_id,
        state=state,
        created_at=lenient.timestamp(item.get("created_at")) or 0.0,
        metadata=dict(metadata or {}),
        total=sum(known) if known else None,
        completed=succeeded if ended else None,
        failed=sum(value or 0 for value in failures) if ended and any(v is not None for v in failures) else None,
        output_file_id=lenient.text(item.get("results_url")) if ended else None,
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


def result_line(item: Any) -> ResultLine | None:
    """A parsed results line as a ResultLine (its custom_id unmarked); None when it names no custom_id."""
    wire_id = lenient.identifier(item.get("custom_id")) if isinstance(item, dict) else None
    if wire_id is None:
        return None
    custom_id = unmarked(wire_id)[0]
    result = lenient.mapping(item.get("result"))
    outcome = OUTCOMES.get(str(result.get("type")), LineOutcome.ERRORED)
    if outcome is LineOutcome.SUCCEEDED:
        return ResultLine(custom_id, outcome, 200, chat_completion(lenient.mapping(result.get("message"))))
    if outcome is LineOutcome.ERRORED:
        wrapper = lenient.mapping(result.get("error"))
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
