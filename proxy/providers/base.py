"""What batchgate needs from a provider: one protocol for synchronous calls, one for batch jobs.

Adapters translate a provider's wire format into these shapes; the rest of batchgate never sees a provider's
own statuses or line formats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
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
class BatchInfo:
    batch_id: str
    state: BatchState
    created_at: float
    metadata: Mapping[str, str]
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str | None = None


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


class BatchClient(Protocol):
    async def upload_file(self, path: Path, *, filename: str) -> str: ...

    async def create_batch(self, input_file_id: str, *, metadata: Mapping[str, str]) -> BatchInfo: ...

    async def retrieve_batch(self, batch_id: str) -> BatchInfo: ...

    async def cancel_batch(self, batch_id: str) -> BatchInfo: ...

    async def find_batches(self, *, metadata_key: str, metadata_value: str) -> list[BatchInfo]: ...

    def result_lines(self, batch: BatchInfo) -> AsyncIterator[ResultLine]: ...

    async def aclose(self) -> None: ...
