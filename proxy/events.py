"""What the worker reports as it goes: one call per event, for metrics and audit.

`WorkerEvents` is the one protocol, and every body is a no-op: an observer (`Telemetry`, a test's recorder)
subclasses it and overrides only the events it cares about; `NullEvents` overrides none.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.reasons import RescueReason, WasteReason, WebhookOutcome
from proxy.reconciliation import Reconciliation
from proxy.store.outcomes import Finished


@dataclass(frozen=True, slots=True)
class WastedLine:
    """A billed answer no job took: a batch line (source: the batch id) or a sync call (source: its call id).

    lane: the lane it was billed in; response: the provider's body (its `usage` is priced)."""

    job_id: str
    team: str
    model: str
    lane: str
    reason: WasteReason
    source: str
    at: float
    response: bytes | None


class WorkerEvents:
    def job_finished(self, job: Finished) -> None:
        """A job reached completed or failed (job.lane: the lane that answered; job.rescued)."""

    def deadline_missed(self, job: Finished) -> None:
        """A job was answered after its deadline."""

    def upstream_error(self, *, lane: str, status: int | None, timeout: bool = False) -> None:
        """A provider call of the worker failed (an HTTP status, a timeout, or neither: a connection error)."""

    def rescue(self, *, job_id: str, group: str, reason: RescueReason) -> None:
        """A deferred job is answered by a synchronous call rather than in its lane, for `reason`."""

    def batch_submitted(self, *, group: str, batch_id: str, provider_batch_id: str, jobs: int, size: int) -> None:
        """A provider batch was created and recorded."""

    def batch_ended(
        self,
        *,
        group: str,
        batch_id: str,
        state: str,
        succeeded: int,
        retried: int,
        failed: int,
        turnaround: float = 0.0,
    ) -> None:
        """A provider batch ended and its results were ingested (state: the provider's final state;
        turnaround: seconds from its submission to its results ingested)."""

    def webhook_attempt(self, *, job_id: str, outcome: WebhookOutcome) -> None:
        """A webhook delivery attempt ended: delivered, to be retried, dead-lettered or refused."""

    def line_wasted(self, line: WastedLine) -> None:
        """The provider billed an answer that no job took (recorded as waste with its reason)."""

    def batch_reconciled(self, result: Reconciliation) -> None:
        """An ended batch's recorded lines and tokens were compared with its own billing data."""


class NullEvents(WorkerEvents):
    """Reports nothing."""
