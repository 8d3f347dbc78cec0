"""A batch's lifecycle as a pure function of time, provider-neutral.

At creation every line gets an answer, an HTTP status (200 or an injected error) and the moment it finishes;
the batch's status, timestamps and counts at any instant follow from those and from the knobs snapshotted at
creation. Nothing runs in the background: reading a batch evaluates it at the current clock.

Timeline: `validating` for validating_s; then `in_progress` while the lines finish one after another, evenly
spread over the processing span (turnaround - validating - finalizing) in a shuffled order; then `finalizing`
for finalizing_s; then `completed`. A batch whose input did not validate goes `failed` when validation ends.
A line beyond `finish_fraction` never finishes: such a batch ends by expiry (expiry_s after creation)
or cancel.
Cancel freezes progress at the moment it is asked for; the batch is `cancelling` for cancel_delay_s.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from proxy.simulator.answers import Answer, answer_for
from proxy.simulator.options import SimulatorOptions

INFINITY = math.inf


class Status(StrEnum):
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
        return self in {Status.COMPLETED, Status.FAILED, Status.EXPIRED, Status.CANCELLED}


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """Why an input does not validate (the whole batch fails, nothing runs)."""

    code: str
    message: str
    line: int | None = None  # 1-based
    param: str | None = None


@dataclass(frozen=True, slots=True)
class LineRequest:
    """One parsed input line, already answered (bodies are not kept: a 200 MB input stays small in memory).

    `problem` is a per-line error: the line is answered 400 and the batch still runs.
    """

    custom_id: str
    model: str
    answer: Answer | None
    problem: str | None = None

    @classmethod
    def from_body(cls, custom_id: str, body: Mapping[str, Any], problem: str | None = None) -> LineRequest:
        answer = answer_for(body) if problem is None else None
        return cls(custom_id, str(body.get("model", "")), answer, problem)


@dataclass(frozen=True, slots=True)
class BatchLine:
    index: int
    custom_id: str
    model: str
    answer: Answer | None  # None when the line is answered with an error
    status_code: int
    error_message: str | None
    finish_offset: float  # seconds after in_progress; INFINITY when the line never finishes

    @property
    def succeeded(self) -> bool:
        return self.status_code == 200


@dataclass(frozen=True, slots=True)
class Timeline:
    """Absolute times of a batch's events; INFINITY for events that never happen."""

    in_progress_at: float
    finalizing_at: float
    end_at: float
    end_status: Status
    cancelling_at: float
    cutoff: float  # lines finishing after this never count


@dataclass(slots=True)
class BatchRecord:
    id: str
    created_at: float
    options: SimulatorOptions
    lines: list[BatchLine]
    issues: list[ValidationIssue]
    attributes: dict[str, Any] = field(default_factory=dict)
    expires: bool = True  # False: never expired (Azure global batch), expires_at is INFINITY
    prompt_tokens: int = 0  # enqueued tokens: the prompts of every line that was answered or refused by a fault
    cancel_requested_at: float | None = None
    settled: bool = False
    by_finish: list[BatchLine] = field(init=False)
    finish_offsets: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.by_finish = sorted(self.lines, key=lambda line: line.finish_offset)
        self.finish_offsets = [line.finish_offset for line in self.by_finish]

    @property
    def model(self) -> str | None:
        return self.lines[0].model if self.lines else None

    @property
    def expires_at(self) -> float:
        return self.created_at + self.options.expiry_s if self.expires else INFINITY

    def timeline(self) -> Timeline:
        natural = self._natural_timeline()
        cancel = self.cancel_requested_at
        if cancel is None or cancel >= natural.end_at:
            return natural
        return Timeline(
            in_progress_at=natural.in_progress_at if natural.in_progress_at <= cancel else INFINITY,
            finalizing_at=natural.finalizing_at if natural.finalizing_at <= cancel else INFINITY,
            end_at=cancel + self.options.cancel_delay_s,
            end_status=Status.CANCELLED,
            cancelling_at=cancel,
            cutoff=min(cancel, natural.cutoff),
        )

    def _natural_timeline(self) -> Timeline:
        """The timeline if nobody cancels."""
        start = self.created_at + self.options.validating_s
        expiry = self.expires_at
        if self.issues:
            return Timeline(INFINITY, INFINITY, start, Status.FAILED, INFINITY, start)
        if expiry <= start:
            return Timeline(INFINITY, INFINITY, expiry, Status.EXPIRED, INFINITY, expiry)
        lines_done = start + (self.finish_offsets[-1] if self.finish_offsets else 0.0)
        if lines_done <= expiry:
            end = lines_done + self.options.finalizing_s
            return Timeline(start, lines_done, end, Status.COMPLETED, INFINITY, INFINITY)
        return Timeline(start, INFINITY, expiry, Status.EXPIRED, INFINITY, expiry)


@dataclass(frozen=True, slots=True)
class BatchView:
    """A batch as seen at one instant."""

    record: BatchRecord
    now: float
    status: Status
    timeline: Timeline
    finished: list[BatchLine]  # in finishing order

    @property
    def unfinished(self) -> list[BatchLine]:
        done = {line.index for line in self.finished}
        return [line for line in self.record.lines if line.index not in done]

    def seen(self, moment: float) -> float | None:
        """An event's time if it has happened by now, else None."""
        return moment if moment <= self.now else None

    @property
    def counts(self) -> tuple[int, int, int]:
        """(total, succeeded, failed) of the lines that have finished."""
        succeeded = sum(1 for line in self.finished if line.succeeded)
        total = 0 if self.record.issues else len(self.record.lines)
        return total, succeeded, len(self.finished) - succeeded

    @property
    def tokens(self) -> tuple[int, int]:
        """(input, output) tokens of the succeeded lines so far."""
        answers = [line.answer for line in self.finished if line.succeeded and line.answer is not None]
        return sum(a.prompt_tokens for a in answers), sum(a.completion_tokens for a in answers)


def view(record: BatchRecord, now: float) -> BatchView:
    timeline = record.timeline()
    if timeline.end_at <= now:
        status = timeline.end_status
    elif timeline.cancelling_at <= now:
        status = Status.CANCELLING
    elif timeline.finalizing_at <= now:
        status = Status.FINALIZING
    elif timeline.in_progress_at <= now:
        status = Status.IN_PROGRESS
    else:
        status = Status.VALIDATING
    horizon = min(now, timeline.cutoff) - timeline.in_progress_at
    finished = record.by_finish[: bisect.bisect_right(record.finish_offsets, horizon)]
    return BatchView(record, now, status, timeline, finished if not record.issues else [])


def finish_offsets(count: int, options: SimulatorOptions, rng: random.Random) -> list[float]:
    """When each line finishes (by input index): evenly spread, shuffled, never input order if count > 1."""
    order = list(range(count))
    rng.shuffle(order)
    if count > 1 and order == sorted(order):
        order.reverse()
    finishing = math.floor(count * options.finish_fraction + 1e-9)
    offsets = [INFINITY] * count
    for position, index in enumerate(order):
        if position < finishing:
            offsets[index] = options.processing_s * (position + 1) / count
    return offsets


def injected_status(options: SimulatorOptions, rng: random.Random) -> int:
    roll = rng.random()
    for status, rate in (
        (500, options.line_500_rate),
        (429, options.line_429_rate),
        (400, options.line_400_rate),
    ):
        if roll < rate:
            return status
        roll -= rate
    return 200
