"""xAI's batch API: a batch carries request counters instead of a status, and its results are paged.

Wire format (https://docs.x.ai/developers/advanced-api-usage/batch-api, and litellm's
`llms/xai/batches/transformation.py` + `handler.py`, which speak it over REST):

- the input is an OpenAI-shaped JSONL file uploaded to `/v1/files` (purpose `batch`); `POST /v1/batches`
  `{"name", "input_file_id"}` creates a batch from it (requests can also be added to a batch one call at a time,
  `POST /v1/batches/{id}/requests`; a file keeps `prepare` and `create` apart, so a crash between them is found);
- a batch: `batch_id`, `name`, `create_time`, `expire_time`, `cancel_time`, `cancel_by_xai_message`,
  `input_file_id`, `state: {num_requests, num_pending, num_success, num_error, num_cancelled}`: no status;
- `GET /v1/batches?limit=&pagination_token=` answers `{"batches": [...], "pagination_token"}`;
- `GET /v1/batches/{id}/results?limit=&pagination_token=` answers `{"results": [{"batch_request_id",
  "batch_result": {"response": {"chat_get_completion": <chat completion>}} | {"error": {"code", "message"}}}],
  "pagination_token"}`;
- `POST /v1/batches/{id}:cancel`.

A batch has no metadata: batchgate's label is written into its `name` (`batchgate;k=v;...`) and read back from it.
xAI bills batch requests at 50% of list ("50% off standard pricing", the page above). It allows "1 batch creation
per second per team": the client spaces its own creates a second apart and, refused with 429 all the same (another
process on the team), waits the Retry-After and tries again a few times; past that the 429 is a TRANSIENT
ProviderError, so the submitter keeps the batch's jobs and tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from proxy.providers import lenient
from proxy.providers.base import BatchInfo, BatchIssue, BatchState, LineOutcome, ProviderError, ResultLine
from proxy.providers.batch_http import answer_json, json_or_raise, provider_errors
from proxy.providers.openai_batch import CLOCK_SKEW, OpenAIBatchClient

log = logging.getLogger("batchgate.providers.xai_batch")

NAME_PREFIX = "batchgate"
RESULTS_PAGE = 100
LIST_PAGE = 100
MAX_LIST_PAGES = 50
CREATE_INTERVAL = 1.0  # seconds between batch creates (xAI: one per second per team)
CREATE_TRIES = 4  # creates tried before a 429 goes up to the submitter
MAX_CREATE_WAIT = 5.0  # the longest Retry-After honoured inside one create (seconds); longer: the submitter waits
# the error codes of a failed request (gRPC status names, or an HTTP status as a number) as an HTTP status
ERROR_STATUSES = {
    "invalid_argument": 400,
    "failed_precondition": 400,
    "permission_denied": 403,
    "not_found": 404,
    "resource_exhausted": 429,
    "deadline_exceeded": 504,
    "unavailable": 503,
    "internal": 500,
}


class XaiBatchClient(OpenAIBatchClient):
    """Files (OpenAI's shape) + xAI batches for one deployment."""

    def __init__(self, *, base_url: str, api_key: str | None, upstream_model: str, timeout: float = 60.0) -> None:
        super().__init__(
            base_url=base_url, api_key=api_key, upstream_model=upstream_model, timeout=timeout, file_expiry=None
        )
        self._creating = asyncio.Lock()
        self._last_create: float | None = None  # monotonic seconds

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        """Create the batch, a second after this client's last create; a 429 (the team's create rate) is waited
        out and tried again up to CREATE_TRIES times, then raised (TRANSIENT)."""
        body = {"name": batch_name(metadata), "input_file_id": prepared}
        async with self._creating:
            for attempt in range(1, CREATE_TRIES + 1):
                if self._last_create is not None:
                    await asyncio.sleep(max(0.0, self._last_create + CREATE_INTERVAL - time.monotonic()))
                with provider_errors():
                    response = await self._http.post("batches", json=body)
                self._last_create = time.monotonic()
                wait = retry_after(response.headers.get("retry-after"))
                if response.status_code != 429 or attempt == CREATE_TRIES or wait > MAX_CREATE_WAIT:
                    break
                log.info("xAI refused a batch create for its rate; trying again in %.1f s", wait)
                await asyncio.sleep(wait)
            return batch_info(json_or_raise(response))

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_info(await answer_json(self._http.get(f"batches/{batch_id}")))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return batch_info(await answer_json(self._http.post(f"batches/{batch_id}:cancel")))

    async def results(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The batch's results, page by page (`pagination_token`); a request with no result has no line."""
        params: dict[str, str | int] = {"limit": RESULTS_PAGE}
        while True:
            page = await answer_json(self._http.get(f"batches/{batch.batch_id}/results", params=params))
            items = page.get("results")
            for item in items if isinstance(items, list) else []:
                line = result_line(item)
                if line is None:
                    lenient.skipped_line("no batch_request_id", repr(item))
                else:
                    yield line
            token = lenient.text(page.get("pagination_token"))
            if token is None or not items:
                return
            params["pagination_token"] = token

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """Batches (newest first, back to `since`) named for `metadata` whose input file is `prepared`."""
        found: list[BatchInfo] = []
        params: dict[str, str | int] = {"limit": LIST_PAGE}
        for _ in range(MAX_LIST_PAGES):
            page = await answer_json(self._http.get("batches", params=params))
            raw = page.get("batches")
            data = [item for item in (raw if isinstance(raw, list) else []) if isinstance(item, dict)]
            for item in data:
                labels = name_labels(item.get("name"))
                ours = item.get("input_file_id") == prepared
                if ours and all(labels.get(k) == v for k, v in metadata.items()):
                    try:
                        found.append(batch_info(item))
                    except ProviderError as exc:
                        log.warning("skipping an unreadable listed batch: %s", exc)
            oldest = lenient.timestamp(data[-1].get("create_time")) if data else None
            token = lenient.text(page.get("pagination_token"))
            if token is None or not data or (oldest is not None and oldest < since - CLOCK_SKEW):
                break
            params["pagination_token"] = token
        return found


def retry_after(value: str | None) -> float:
    """Seconds a Retry-After header asks for (a number of seconds; CREATE_INTERVAL when absent or unreadable)."""
    try:
        return max(0.0, float(value)) if value else CREATE_INTERVAL
    except ValueError:
        return CREATE_INTERVAL


def batch_name(metadata: Mapping[str, str]) -> str:
    """batchgate's label as a batch name: `batchgate;k=v;...` (keys sorted)."""
    return ";".join([NAME_PREFIX, *(f"{key}={metadata[key]}" for key in sorted(metadata))])


def name_labels(name: Any) -> dict[str, str]:
    """The label a batch name written by `batch_name` carries ({} for any other name)."""
    if not isinstance(name, str):
        return {}
    prefix, *pairs = name.split(";")
    if prefix != NAME_PREFIX:
        return {}
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def batch_state(item: Mapping[str, Any], now: float) -> BatchState:
    """The state xAI's counters and times imply: cancelled by xAI (its input refused) is FAILED; cancelled by
    its owner is CANCELLING while requests are still pending, then CANCELLED; no request yet is VALIDATING (the
    input file is being read); pending past `expire_time` is EXPIRED; nothing pending is COMPLETED."""
    counters = lenient.mapping(item.get("state"))
    pending = lenient.count(counters.get("num_pending")) or 0
    if lenient.text(item.get("cancel_by_xai_message")):
        return BatchState.FAILED
    if item.get("cancel_time"):
        return BatchState.CANCELLING if pending else BatchState.CANCELLED
    if not lenient.count(counters.get("num_requests")):
        return BatchState.VALIDATING
    if pending:
        expires = lenient.timestamp(item.get("expire_time"))
        return BatchState.EXPIRED if expires is not None and expires <= now else BatchState.IN_PROGRESS
    return BatchState.COMPLETED


def batch_info(item: Any, *, now: float | None = None) -> BatchInfo:
    """An xAI batch as a BatchInfo (`now`: epoch seconds, for expiry); ProviderError (TRANSIENT, code
    `malformed_response`) when it has no readable id."""
    if not isinstance(item, dict):
        raise lenient.malformed("batch object", item)
    batch_id = lenient.identifier(item.get("batch_id"))
    if batch_id is None:
        raise lenient.malformed("batch object (no batch_id)", item)
    counters = lenient.mapping(item.get("state"))
    errors, cancelled = lenient.count(counters.get("num_error")), lenient.count(counters.get("num_cancelled"))
    refusal = lenient.text(item.get("cancel_by_xai_message"))
    return BatchInfo(
        batch_id=batch_id,
        state=batch_state(item, time.time() if now is None else now),
        created_at=lenient.timestamp(item.get("create_time")) or 0.0,
        metadata=name_labels(item.get("name")),
        total=lenient.count(counters.get("num_requests")),
        completed=lenient.count(counters.get("num_success")),
        failed=None if errors is None else errors + (cancelled or 0),
        errors=refusal,
        issues=(BatchIssue(None, refusal),) if refusal else (),
    )


def result_line(item: Any) -> ResultLine | None:
    """One result as a ResultLine (the answer under `response.<endpoint>`, e.g. `chat_get_completion`); None when
    it names no batch_request_id."""
    custom_id = lenient.identifier(item.get("batch_request_id")) if isinstance(item, dict) else None
    if custom_id is None:
        return None
    result = lenient.mapping(item.get("batch_result"))
    response = lenient.mapping(result.get("response"))
    body = next((value for value in response.values() if isinstance(value, dict)), None)
    if body is not None:
        return ResultLine(custom_id, LineOutcome.SUCCEEDED, 200, body, request_id=lenient.text(body.get("id")))
    error = lenient.mapping(result.get("error"))
    code = error.get("code")
    status = lenient.count(code) if isinstance(code, int) else ERROR_STATUSES.get(str(code).lower(), 500)
    message = lenient.text(error.get("message")) or "xAI returned no response for this request."
    error_body = {"error": {"message": message, "type": str(code), "code": str(code)}}
    return ResultLine(custom_id, LineOutcome.ERRORED, status, error_body, error_code=str(code), error_message=message)
