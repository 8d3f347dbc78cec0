"""Learned batch turnaround: a time-decayed histogram of how long batches took (submit -> ended), with quantiles.

Pure arithmetic; the histogram lives in Redis (proxy/store/turnarounds.py) and is shared by every worker. Buckets
are log-spaced: bucket 0 holds [0, FIRST_EDGE) seconds, bucket i >= 1 holds [FIRST_EDGE * RATIO**(i-1),
FIRST_EDGE * RATIO**i), the last one everything above. Each observation adds weight 1 to its bucket after every
weight was multiplied by 0.5 ** (elapsed / half_life) since the previous observation, so recent batches count
more. Until `min_batches` batches were seen the distribution answers from its prior (the configured
turnaround_estimate, as a point mass), which is exactly batchgate's fixed-estimate behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

FIRST_EDGE = 1.0  # seconds
RATIO = 1.25
BUCKETS = 64  # up to FIRST_EDGE * RATIO**63 ~ 1.3e6 s (15 days): past any provider's 24 h window

BANDS = ((100, "1-99"), (1000, "100-999"), (10_000, "1000-9999"))
TOP_BAND = "10000+"
ALL = "all"  # every batch of the group, whatever its size: what a decision uses before a batch exists


def band_of(jobs: int) -> str:
    """The batch-size band of a batch of `jobs` requests."""
    for limit, name in BANDS:
        if jobs < limit:
            return name
    return TOP_BAND


def bucket_of(seconds: float) -> int:
    if seconds < FIRST_EDGE:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log(seconds / FIRST_EDGE) / math.log(RATIO)))


def bucket_bounds(index: int) -> tuple[float, float]:
    """Lower and upper edge of a bucket (seconds)."""
    if index == 0:
        return 0.0, FIRST_EDGE
    return FIRST_EDGE * RATIO ** (index - 1), FIRST_EDGE * RATIO**index


def decay_factor(elapsed: float, half_life: float) -> float:
    """How much an old weight still counts after `elapsed` seconds (1 for no time or no decay)."""
    if elapsed <= 0 or half_life <= 0:
        return 1.0
    return float(0.5 ** (elapsed / half_life))


@dataclass(frozen=True, slots=True)
class Turnaround:
    """One group's (and band's) learned turnaround, or its prior.

    `weights` maps bucket index -> decayed weight; `seen` counts every batch observed (not decayed); `prior` is the
    configured estimate (seconds), answered for every quantile while `seen < min_batches`.
    """

    prior: float
    weights: Mapping[int, float] = field(default_factory=dict)
    seen: int = 0
    min_batches: int = 20

    @property
    def learned(self) -> bool:
        return self.seen >= self.min_batches and self.total > 0

    @property
    def total(self) -> float:
        return sum(self.weights.values())

    def observed(self, seconds: float, *, elapsed: float = 0.0, half_life: float = 0.0) -> Turnaround:
        """A copy with one more batch of `seconds`, the older weights decayed by `elapsed` seconds first."""
        factor = decay_factor(elapsed, half_life)
        weights = {index: weight * factor for index, weight in self.weights.items()}
        index = bucket_of(seconds)
        weights[index] = weights.get(index, 0.0) + 1.0
        return Turnaround(self.prior, weights, self.seen + 1, self.min_batches)

    def quantile(self, q: float) -> float:
        """Seconds within which a share `q` (0..1) of batches ended; the prior until learned."""
        if not self.learned:
            return self.prior
        return self._quantile(min(1.0, max(0.0, q)))

    def cdf(self, seconds: float) -> float:
        """Share of batches that ended within `seconds` (0..1); the prior's step until learned."""
        if not self.learned:
            return 1.0 if seconds >= self.prior else 0.0
        total = self.total
        below = 0.0
        for index in sorted(self.weights):
            low, high = bucket_bounds(index)
            weight = self.weights[index]
            if seconds >= high:
                below += weight
            elif seconds > low:
                below += weight * _share_within(seconds, low, high)
        return min(1.0, below / total)

    def remaining(self, elapsed: float, q: float) -> float | None:
        """Seconds a batch running for `elapsed` seconds still needs to end with confidence `q`, given that it
        has not ended yet; None when it has outlived everything seen (the distribution can say nothing more).
        Until learned: the rest of the prior, 0 once past it (the caller then judges by progress)."""
        if not self.learned:
            return max(0.0, self.prior - elapsed)
        done = self.cdf(elapsed)
        if done >= 1.0 - 1e-9:
            return None
        level = done + q * (1.0 - done)
        return max(0.0, self._quantile(level) - elapsed)

    def _quantile(self, q: float) -> float:
        total = self.total
        target = q * total
        running = 0.0
        ordered = sorted(index for index, weight in self.weights.items() if weight > 0)
        for index in ordered:
            weight = self.weights[index]
            low, high = bucket_bounds(index)
            if running + weight >= target:
                share = 0.0 if weight <= 0 else (target - running) / weight
                return _within(low, high, share)
            running += weight
        return bucket_bounds(ordered[-1])[1] if ordered else self.prior


def break_even(*, batch: float, rescue: float, waste: float, alternative: float) -> float:
    """The least probability (0..1) of a batch ending in time at which batching costs, in expectation, no more
    than the `alternative` venue answering at once. Prices are shares of the list price: `batch` when the batch
    answers, `rescue` (list: 1.0) plus `waste` (the rescued job's line, billed when its batch still bills it) when
    it is late and the job is rescued at its last safe moment:
    p * batch + (1 - p) * (rescue + waste) <= alternative. 0 when a rescue never costs more than the alternative;
    1 when the alternative is as cheap as a batch that surely ends in time."""
    late = rescue + waste
    if late <= batch:
        return 1.0 if alternative <= batch else 0.0
    return min(1.0, max(0.0, (late - alternative) / (late - batch)))


def _within(low: float, high: float, share: float) -> float:
    """The point a `share` (0..1) of the way through a bucket, geometrically (linearly in bucket 0)."""
    share = min(1.0, max(0.0, share))
    if low <= 0:
        return high * share
    return float(low * (high / low) ** share)


def _share_within(seconds: float, low: float, high: float) -> float:
    if low <= 0:
        return seconds / high
    return math.log(seconds / low) / math.log(high / low)
