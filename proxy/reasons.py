"""Why a deferred job left its lane or ended unanswered, as closed sets of values.

The call site that decides picks the member; the same value becomes the metric label
(`batchgate_rescues_total{reason}`), the job's stored `rescue_reason`, or the `code` of the job's error.
Nothing parses free text back into a reason.
"""

from __future__ import annotations

from enum import StrEnum


class RescueReason(StrEnum):
    """Why a deferred job was answered by a synchronous call rather than the lane it was given."""

    DEADLINE_AT_RISK_QUEUED = "deadline_at_risk_queued"
    """Still queued, and a batch started now would end after the deadline less the safety margin."""
    DEADLINE_AT_RISK_IN_BATCH = "deadline_at_risk_in_batch"
    """Its batch is not expected to end before the deadline less the safety margin."""
    DEADLINE_TOO_SHORT = "deadline_too_short"
    """At acceptance: the deadline leaves no time for a batch."""
    BATCH_FAILED = "batch_failed"
    """Its batch failed (validation) and no time is left for another batch."""
    BATCH_EXPIRED = "batch_expired"
    """Its batch expired (or was lost upstream) without its line, and no time is left for another batch."""
    LINE_ERROR = "line_error"
    """Its line failed transiently (or went missing from a completed batch) with no time left for another batch."""
    FLEX_UNAVAILABLE = "flex_unavailable"
    """A flex job whose flex call was refused for capacity (429): answered at list price."""
    BATCH_STALLED = "batch_stalled"
    """Its batch showed no progress past what the learned turnaround allows, and no new batch fits the deadline."""


class FailureReason(StrEnum):
    """The `code` of a job's error when batchgate itself, not the provider's answer, ends the job as failed."""

    BATCH_FAILED = "batch_failed"
    """Its batch failed validation again after one retry."""
    BATCH_EXPIRED = "batch_expired"
    """Its batch expired without its line, and its retries or its deadline are spent."""
    MISSING_RESULT = "missing_result"
    """Its batch completed without a line for it, and its retries or its deadline are spent."""
    UPSTREAM_ERROR = "upstream_error"
    """The provider answered a synchronous call with an error status and no error object."""


class WasteReason(StrEnum):
    """Why a line the provider billed answered no job (recorded as waste, never as a job's cost)."""

    ANSWERED_ELSEWHERE = "answered_elsewhere"
    """Its job was already answered by another lane (rescued to the sync lane, or the batch line came first)."""
    CANCELLED = "cancelled"
    """Its job was cancelled by its caller after the line had been sent."""
    DUPLICATE = "duplicate"
    """Its job was already answered by another batch (a resubmission), or is held by one."""


class WebhookOutcome(StrEnum):
    """What one webhook delivery attempt came to."""

    DELIVERED = "delivered"
    RETRIED = "retried"
    DEAD_LETTER = "dead_letter"
    REFUSED = "refused"
