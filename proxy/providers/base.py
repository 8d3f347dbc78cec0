"""What batchgate needs from a provider: one protocol for synchronous calls, one for batch jobs, one error.

Adapters translate a provider's wire format into these shapes; the rest of batchgate never sees a provider's
own statuses, line formats or HTTP library errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class UpstreamStream:
    """An open streaming response: status and headers known, body arriving as raw SSE bytes."""

    status: int
    headers: Mapping[str, str]
    chunks: AsyncIterator[bytes]


class CompletionClient(Protocol):
    """Synchronous chat completions. A provider's own error answer comes back as an UpstreamResponse with its
    status; a call that got no answer (timeout, connection failure) raises ProviderError."""

    async def complete(self, body: Mapping[str, Any]) -> UpstreamResponse: ...

    def stream(self, body: Mapping[str, Any]) -> AbstractAsyncContextManager[UpstreamStream]: ...

    async def aclose(self) -> None: ...


class BatchState(StrEnum):
    """A provider batch's lifecycle, normalised across providers."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in {BatchState.COMPLETED, BatchState.FAILED, BatchState.EXPIRED, BatchState.CANCELLED}


@dataclass(frozen=True, slots=True)
class BatchIssue:
    """One reason a provider gave for failing a whole batch (OpenAI `errors.data[]`): its `code`, `message` and
    `line`, the 1-based position of the refused request in the sequence given to `prepare` (None: not named)."""

    code: str | None
    message: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A provider batch as the adapter read it. `created_at` is epoch seconds (0.0 when the provider gave none).
    The line counts are None when the provider does not say (Azure's null `request_counts`, Anthropic's counts
    before the batch ends): unknown, which is not the same as zero."""

    batch_id: str
    state: BatchState
    created_at: float
    metadata: Mapping[str, str]
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str | None = None
    issues: tuple[BatchIssue, ...] = ()  # the structured form of `errors`, when the provider gives one
    input_tokens: int | None = None  # the batch's own `usage` (OpenAI), for reconciliation; None: not given
    output_tokens: int | None = None

    @property
    def error_codes(self) -> tuple[str, ...]:
        """The codes of a failed batch's issues (e.g. token_limit_exceeded)."""
        return tuple(issue.code for issue in self.issues if issue.code)

    @property
    def done(self) -> int | None:
        """Lines finished either way, or None when the provider does not say."""
        if self.completed is None or self.failed is None:
            return None
        return self.completed + self.failed

    @property
    def progress(self) -> float | None:
        """Share of lines finished (0..1), or None when unknown (no total, or no finished count)."""
        done = self.done
        if not self.total or done is None:
            return None
        return min(1.0, done / self.total)


class LineOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One line of a finished batch, joined back to its job by custom_id."""

    custom_id: str
    outcome: LineOutcome
    status_code: int | None
    body: Mapping[str, Any] | None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None  # the provider's request id for this line, when its format has one

    @property
    def transient(self) -> bool:
        """Worth queueing again: rate limits, server errors and expiry."""
        if self.outcome in (LineOutcome.EXPIRED, LineOutcome.CANCELLED):
            return True
        return self.status_code is not None and (self.status_code == 429 or self.status_code >= 500)


@dataclass(frozen=True, slots=True)
class PreparedInput:
    """A batch's input, ready for `create`: `ref` is opaque to the caller (a provider file id, a staged body) and
    is kept with the batch record; `requests` counts the lines in it. An empty input (`requests == 0`) was not
    sent anywhere and has an empty `ref`."""

    ref: str
    requests: int


class BatchClient(Protocol):
    """One provider's batch API, its wire format owned end to end.

    Every method raises `ProviderError` (never an HTTP library's error) when the provider or the network fails.
    `metadata` is batchgate's label for a batch (string pairs); the same mapping is given to `prepare`, `create`
    and `find_batches`.
    """

    async def prepare(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], *, metadata: Mapping[str, str]
    ) -> PreparedInput:
        """Turn `(custom_id, chat-completions body)` pairs into the provider's batch input (streamed: never the
        whole batch in memory). A line the provider would refuse raises ProviderError(BAD_LINE, custom_id=...)."""
        ...

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        """Start a batch from a prepared input's `ref`. NOT_FOUND: the input is gone, prepare it again."""
        ...

    async def retrieve(self, batch_id: str) -> BatchInfo: ...

    def results(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """An ended batch's lines, streamed, each joined back to its custom_id."""
        ...

    async def cancel(self, batch_id: str) -> BatchInfo: ...

    async def cleanup(self, prepared: str) -> None:
        """Drop a prepared input once its batch has ended (or will never be created); missing is fine."""
        ...

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """Batches created upstream at or after `since` (epoch seconds) for this `metadata` and prepared input,
        newest first: how a submission cut short by a crash finds the batch it may have created, on any host."""
        ...

    async def aclose(self) -> None: ...


def min_requests(client: BatchClient) -> int:
    """The fewest requests one batch of `client` may carry: its `min_requests` when the adapter has one (Bedrock's
    minimum records per job), else 1. A queue below it is held, never sent to fail."""
    value = getattr(client, "min_requests", 1)
    return value if isinstance(value, int) and value > 0 else 1


class ErrorClass(StrEnum):
    """What the worker does about a failed provider call."""

    TRANSIENT = "transient"  # network failure, timeout, rate limit, 5xx: try again soon
    TRANSIENT_CAPACITY = "transient_capacity"  # the provider's batch queue is full: try again later, more slowly
    ACCOUNT_PROBLEM = "account_problem"  # key, permission, quota, billing: nothing works until someone acts
    BAD_REQUEST = "bad_request"  # the call as made is refused
    BAD_LINE = "bad_line"  # one line of a batch input is refused (`ProviderError.custom_id` names it)
    NOT_FOUND = "not_found"  # the batch or the prepared input is unknown upstream

    @property
    def transient(self) -> bool:
        return self in (ErrorClass.TRANSIENT, ErrorClass.TRANSIENT_CAPACITY)


ACCOUNT_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "billing_error", "authentication_error", "permission_error",
     "invalid_api_key", "account_deactivated"}
)  # fmt: skip
CAPACITY_CODES = frozenset({"token_limit_exceeded"})  # the provider's queue of batch tokens is full
NOT_FOUND_CODES = frozenset({"not_found_error", "not_found"})
CODE_CLASSES = (
    (ACCOUNT_CODES, ErrorClass.ACCOUNT_PROBLEM),
    (CAPACITY_CODES, ErrorClass.TRANSIENT_CAPACITY),
    (NOT_FOUND_CODES, ErrorClass.NOT_FOUND),
)
STATUS_CLASSES = {
    401: ErrorClass.ACCOUNT_PROBLEM,
    402: ErrorClass.ACCOUNT_PROBLEM,
    403: ErrorClass.ACCOUNT_PROBLEM,
    404: ErrorClass.NOT_FOUND,
}


def classify(status: int | None, code: str | None) -> ErrorClass:
    """A first cut from HTTP status and the provider's error code (OpenAI `code`, Anthropic `type`);
    `status` None means no answer at all (network failure)."""
    for codes, kind in CODE_CLASSES:
        if code in codes:
            return kind
    if status is None or status >= 500 or status in (408, 429):
        return ErrorClass.TRANSIENT
    return STATUS_CLASSES.get(status, ErrorClass.BAD_REQUEST)


class ProviderError(Exception):
    """A provider call failed: the only error a provider adapter raises.

    `status` is the provider's HTTP status (None: no answer, e.g. a connection failure), `code` its error code,
    `classification` what the worker should do about it; `custom_id` names the refused line of a BAD_LINE.
    """

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        code: str | None = None,
        classification: ErrorClass | None = None,
        custom_id: str | None = None,
    ) -> None:
        super().__init__(f"{status if status is not None else 'no answer'}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.classification = classification if classification is not None else classify(status, code)
        self.custom_id = custom_id

    @property
    def transient(self) -> bool:
        return self.classification.transient


def bad_line(custom_id: str, message: str) -> ProviderError:
    """The error of one job's input line that cannot be sent (400 `invalid_batch_line`, BAD_LINE): that job fails
    alone, never the batch or the worker."""
    return ProviderError(
        400, message, code="invalid_batch_line", classification=ErrorClass.BAD_LINE, custom_id=custom_id
    )
