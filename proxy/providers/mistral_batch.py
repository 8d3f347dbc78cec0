"""Mistral's batch API: files with purpose `batch`, jobs under `/v1/batch/jobs`, OpenAI-shaped result files.

Wire format (https://docs.mistral.ai/capabilities/batch, the `mistralai` SDK's BatchJobIn / BatchJobOut, and
litellm's `llms/mistral/batches/transformation.py`):

- input line: `{"custom_id": ..., "body": {...}}`; the model is the job's, not each line's;
- `POST /v1/batch/jobs` `{"input_files": [file id], "endpoint", "model", "metadata", "timeout_hours"}`;
- a job: `id`, `status` (QUEUED, RUNNING, SUCCESS, FAILED, TIMEOUT_EXCEEDED, CANCELLATION_REQUESTED, CANCELLED),
  `created_at` (epoch s), `total_requests`, `succeeded_requests`, `failed_requests`, `output_file`, `error_file`,
  `errors` (`[{"message", "count"}]`), `metadata`, `input_files`;
- `GET /v1/batch/jobs?page=&page_size=&created_after=` answers `{"data": [...], "object": "list", "total": n}`;
- `POST /v1/batch/jobs/{id}/cancel`;
- output and error files hold OpenAI-shaped lines (`{"custom_id", "response": {"status_code", "body"}}`).

Mistral batch work is billed at 50% of list (proxy/pricing.py cites the page).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from proxy.providers import lenient
from proxy.providers.base import BatchInfo, BatchIssue, BatchState, ProviderError
from proxy.providers.batch_http import answer_json
from proxy.providers.openai_batch import CHAT_ENDPOINT, CLOCK_SKEW, OpenAIBatchClient, dump_line, sent_body

log = logging.getLogger("batchgate.providers.mistral_batch")

PAGE_SIZE = 100
MAX_PAGES = 50
DEFAULT_TIMEOUT_HOURS = 24  # the job's own default; a job still running then ends TIMEOUT_EXCEEDED
MAX_FILE_BYTES = 512 * 1024 * 1024  # the files API's upload limit, so a line's too
STATES = {
    "queued": BatchState.VALIDATING,
    "running": BatchState.IN_PROGRESS,
    "success": BatchState.COMPLETED,
    "failed": BatchState.FAILED,
    "timeoutexceeded": BatchState.EXPIRED,
    "cancellationrequested": BatchState.CANCELLING,
    "cancelled": BatchState.CANCELLED,
}  # keyed by lenient.status_key


class MistralBatchClient(OpenAIBatchClient):
    """Files (shared with OpenAI's shape: upload, content, delete) + batch jobs for one Mistral deployment;
    `timeout_hours` is sent with every job."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        upstream_model: str,
        timeout: float = 60.0,
        timeout_hours: int = DEFAULT_TIMEOUT_HOURS,
    ) -> None:
        super().__init__(
            base_url=base_url, api_key=api_key, upstream_model=upstream_model, timeout=timeout, file_expiry=None
        )
        self._timeout_hours = timeout_hours

    def encode(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        return encode_line(custom_id, body)

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        payload = {
            "input_files": [prepared],
            "endpoint": CHAT_ENDPOINT,
            "model": self._model,
            "metadata": dict(metadata),
            "timeout_hours": self._timeout_hours,
        }
        return job_info(await answer_json(self._http.post("batch/jobs", json=payload)))

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return job_info(await answer_json(self._http.get(f"batch/jobs/{batch_id}")))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return job_info(await answer_json(self._http.post(f"batch/jobs/{batch_id}/cancel")))

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """Jobs created since `since` (the provider filters by `created_after`, whatever order it lists in) whose
        metadata carries every given pair and whose input files include `prepared`."""
        found: list[BatchInfo] = []
        after = datetime.fromtimestamp(max(0.0, since - CLOCK_SKEW), UTC).isoformat()
        for page in range(MAX_PAGES):
            params: dict[str, str | int] = {"page": page, "page_size": PAGE_SIZE, "created_after": after}
            listing = await answer_json(self._http.get("batch/jobs", params=params))
            raw = listing.get("data")
            data = [item for item in (raw if isinstance(raw, list) else []) if isinstance(item, dict)]
            for item in data:
                labels = lenient.mapping(item.get("metadata"))
                inputs = item.get("input_files")
                ours = isinstance(inputs, list) and prepared in inputs
                if ours and all(labels.get(k) == v for k, v in metadata.items()):
                    try:
                        found.append(job_info(item))
                    except ProviderError as exc:
                        log.warning("skipping an unreadable listed job: %s", exc)
            total = lenient.count(listing.get("total"))
            if len(data) < PAGE_SIZE or (total is not None and (page + 1) * PAGE_SIZE >= total):
                break
        return found


def encode_line(custom_id: str, body: Mapping[str, Any]) -> bytes:
    """One line of a Mistral batch input file: `{"custom_id", "body"}`, the body without `model` (the job's)
    and without streaming fields. ProviderError(BAD_LINE, custom_id=...) when it does not encode."""
    sent = sent_body(body)
    sent.pop("model", None)
    return dump_line({"custom_id": custom_id, "body": sent}, custom_id)


def job_info(item: Any) -> BatchInfo:
    """A Mistral batch job as a BatchInfo, lenient in every field; ProviderError (TRANSIENT, code
    `malformed_response`) when it has no readable id."""
    if not isinstance(item, dict):
        raise lenient.malformed("batch job", item)
    job_id = lenient.identifier(item.get("id"))
    if job_id is None:
        raise lenient.malformed("batch job (no id)", item)
    listed = item.get("errors")
    issues = tuple(
        BatchIssue(None, _issue_text(entry))
        for entry in (listed if isinstance(listed, list) else [])
        if isinstance(entry, dict)
    )
    return BatchInfo(
        batch_id=job_id,
        state=lenient.batch_state(item.get("status"), STATES),
        created_at=lenient.timestamp(item.get("created_at")) or 0.0,
        metadata=lenient.string_pairs(item.get("metadata")),
        total=lenient.count(item.get("total_requests")),
        completed=lenient.count(item.get("succeeded_requests")),
        failed=lenient.count(item.get("failed_requests")),
        output_file_id=lenient.identifier(item.get("output_file")),
        error_file_id=lenient.identifier(item.get("error_file")),
        errors="; ".join(issue.message for issue in issues) or None,
        issues=issues,
    )


def _issue_text(entry: dict[str, Any]) -> str:
    message = str(entry.get("message") or "")
    times = lenient.count(entry.get("count"))
    return f"{message} (x{times})" if times and times > 1 else message
