"""Pure arithmetic of deadlines: when a queue must be flushed, when a batch can no longer make it."""

from __future__ import annotations

FLUSH_SLACK_SHARE = 0.05  # of the turnaround estimate: time left for building and uploading the batch
FLUSH_SLACK_MIN = 2.0
FLUSH_SLACK_MAX = 60.0


def flush_slack(turnaround: float) -> float:
    """How far ahead of the rescuer's point of no return the submitter flushes (a 50k batch takes seconds)."""
    return max(FLUSH_SLACK_MIN, min(FLUSH_SLACK_MAX, FLUSH_SLACK_SHARE * turnaround))


def flush_by(now: float, *, deadline: float | None, max_wait: float, turnaround: float, margin: float) -> float:
    """When a job's queue must be flushed: its max wait, or the last moment a batch meets its deadline."""
    due = now + max_wait
    if deadline is not None:
        due = min(due, deadline - margin - turnaround - flush_slack(turnaround))
    return due


def batch_lane_fits(now: float, *, deadline: float | None, turnaround: float, margin: float) -> bool:
    """Whether a batch started now is expected to end before the deadline less the safety margin."""
    return deadline is None or now + turnaround < deadline - margin


def remaining_estimate(now: float, *, started_at: float, turnaround: float, progress: float | None) -> float:
    """Seconds a running batch is expected to need still; `progress` is the share of its lines finished (0..1),
    None when the provider does not say.

    Within its turnaround estimate, the rest of that estimate, whatever the progress (unknown included). Overdue,
    its own pace so far when it reports progress above zero; unknown progress (or none yet) gives no pace, and
    the job relies on the safety margin alone.
    """
    age = max(0.0, now - started_at)
    if progress is not None and progress >= 1:
        return 0.0
    if age < turnaround:
        return turnaround - age
    if progress is not None and progress > 0:
        return age * (1 - progress) / progress
    return 0.0


def at_risk(now: float, *, deadline: float, remaining: float, margin: float) -> bool:
    return now + remaining > deadline - margin
