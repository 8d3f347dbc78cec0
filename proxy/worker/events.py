"""What the worker reports as it goes: one call per event, for metrics and audit (no-op by default)."""

from __future__ import annotations

from typing import Protocol

from proxy.store.outcomes import Finished


class WorkerEvents(Protocol):
    def job_finished(self, job: Finished) -> None:
        """A job reached completed or failed (job.lane: the lane that answered; job.rescued)."""

    def deadline_missed(self, job: Finished) -> None:
        """A job was answered after its deadline."""

    def upstream_error(self, *, lane: str, status: int | None, timeout: bool = False) -> None:
        """A provider call of the worker failed (an HTTP status, a timeout, or neither: a connection error)."""

    def rescue(self, *, job_id: str, group: str, reason: str) -> None:
        """A job was moved to the synchronous lane to keep its deadline (or because batching failed it)."""

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


class NullEvents:
    def job_finished(self, job: Finished) -> None:
        pass

    def deadline_missed(self, job: Finished) -> None:
        pass

    def upstream_error(self, *, lane: str, status: int | None, timeout: bool = False) -> None:
        pass

    def rescue(self, *, job_id: str, group: str, reason: str) -> None:
        pass

    def batch_submitted(self, *, group: str, batch_id: str, provider_batch_id: str, jobs: int, size: int) -> None:
        pass

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
        pass
