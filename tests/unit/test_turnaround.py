"""The learned turnaround distribution (proxy/jobs/turnaround.py): quantiles, decay, seeding, the conditional
remaining time; and the decision rules built on it (lane choice, deadline guard, stall)."""

from __future__ import annotations

import random

import pytest

from proxy.jobs.timing import at_risk
from proxy.jobs.turnaround import ALL, RATIO, Turnaround, band_of, bucket_bounds, bucket_of
from proxy.jobs.turnaround_book import for_batch
from proxy.policy.decide import choose_lane
from proxy.policy.facts import LaneFacts
from proxy.store.records import BatchRecord
from proxy.worker.rescuer import Rescuer
from proxy.worker.stalls import is_stalled

HOUR = 3600.0


def learned(samples: list[float], *, prior: float = HOUR, min_batches: int = 1) -> Turnaround:
    dist = Turnaround(prior, min_batches=min_batches)
    for seconds in samples:
        dist = dist.observed(seconds)
    return dist


def test_buckets_are_log_spaced_and_cover_their_values() -> None:
    for seconds in (0.0, 0.5, 1.0, 3.7, 900.0, 86_400.0):
        low, high = bucket_bounds(bucket_of(seconds))
        assert low <= seconds < high
    assert bucket_bounds(10)[1] / bucket_bounds(10)[0] == pytest.approx(RATIO)


def test_quantiles_of_a_learned_distribution_are_within_one_bucket_of_the_truth() -> None:
    dice = random.Random(7)
    samples = sorted(dice.lognormvariate(6.8, 1.0) for _ in range(5000))  # median ~15 min, long tail
    dist = learned(samples)
    for q in (0.1, 0.5, 0.9, 0.99):
        truth = samples[int(q * len(samples))]
        assert truth / RATIO <= dist.quantile(q) <= truth * RATIO, q
    assert dist.quantile(0.5) < dist.quantile(0.9) < dist.quantile(0.99)
    assert dist.cdf(dist.quantile(0.9)) == pytest.approx(0.9, abs=0.01)


def test_until_enough_batches_are_seen_the_configured_estimate_answers() -> None:
    dist = learned([10.0] * 19, prior=HOUR, min_batches=20)
    assert not dist.learned
    assert dist.quantile(0.5) == dist.quantile(0.99) == HOUR
    assert dist.remaining(600.0, 0.99) == HOUR - 600.0  # the rest of the estimate, as the fixed rule had it
    twentieth = dist.observed(10.0)
    assert twentieth.learned
    assert twentieth.quantile(0.99) < 15.0


def test_old_batches_fade_with_the_half_life() -> None:
    slow = learned([1000.0] * 50)
    assert slow.quantile(0.5) > 800
    day = 86_400.0
    # a week later (7 half-lives), 10 fast batches outweigh 50 slow ones: 50 / 2**7 < 0.4
    faster = slow.observed(10.0, elapsed=7 * day, half_life=day)
    for _ in range(9):
        faster = faster.observed(10.0)
    assert faster.quantile(0.9) < 15.0
    assert faster.quantile(0.999) > 800  # the old ones still shape the far tail
    undecayed = slow
    for _ in range(10):
        undecayed = undecayed.observed(10.0)
    assert undecayed.quantile(0.5) > 800  # without decay the old majority still rules


def test_remaining_time_is_conditional_on_the_batch_not_having_ended() -> None:
    dist = learned([60.0] * 90 + [3 * HOUR] * 10)  # 90% end in a minute, the rest take 3 hours
    assert dist.quantile(0.5) < 80
    fresh = dist.remaining(0.0, 0.5)
    assert fresh is not None
    assert fresh < 80
    late = dist.remaining(10 * 60.0, 0.5)  # 10 minutes in and still running: it is one of the slow ones
    assert late is not None
    assert late > 2 * HOUR
    assert dist.remaining(10 * HOUR, 0.99) is None  # older than anything seen: the distribution cannot say


def test_bands_split_batches_by_size_and_fall_back_to_the_whole_group() -> None:
    assert [band_of(n) for n in (1, 99, 100, 5000, 50_000)] == ["1-99", "1-99", "100-999", "1000-9999", "10000+"]
    small = learned([10.0] * 30, min_batches=20)
    everything = learned([10.0] * 30 + [1000.0] * 30, min_batches=20)
    unseen = Turnaround(HOUR, min_batches=20)
    bands = {ALL: everything, "1-99": small, "100-999": unseen}
    assert for_batch(bands, 5) is small
    assert for_batch(bands, 500) is everything  # its own band is not learned yet
    assert for_batch(bands, None) is everything


def lanes(batch_turnaround: float) -> LaneFacts:
    return LaneFacts(batch_turnaround=batch_turnaround, supports_flex=False, flex_turnaround=900, safety_margin=60)


def test_the_batch_lane_takes_a_deadline_the_learned_p99_fits_though_the_estimate_does_not() -> None:
    dist = learned([300.0] * 200)  # batches end in 5 minutes, every time
    need = dist.quantile(0.99)
    assert need < 400
    assert choose_lane("batch", 30 * 60, lanes(need))[0] == "batch"
    assert choose_lane("batch", 30 * 60, lanes(HOUR))[0] == "sync"  # the fixed 1 h estimate sends it sync
    assert choose_lane("batch", 5 * 60, lanes(need))[0] == "sync"  # 5 minutes: not at 99%


def record(*, submitted_at: float, jobs: int = 10, total: int = 10, done: int = 0) -> BatchRecord:
    return BatchRecord(
        id="b1", tag="t", group="m", state="submitted", created_at=submitted_at, jobs=jobs, size=1, file_id="f",
        provider_batch_id="p", provider_state="in_progress", submitted_at=submitted_at, jobs_marked=True,
        poll_interval=1.0, total=total, done=done, lines=jobs, cancel_requested=False, ended_at=None,
    )  # fmt: skip


def test_the_guard_keeps_a_job_while_its_batch_ends_in_time_at_the_confidence_and_not_after() -> None:
    dist = learned([60.0] * 95 + [2 * HOUR] * 5)
    bands = {ALL: dist}
    now = 10_000.0
    young = Rescuer._batch_remaining(record(submitted_at=now - 10), now, bands, 0.9, starting=0)
    assert young < 120  # at 90%, a 10 s old batch ends within the minute
    assert not at_risk(now, deadline=now + 30 * 60, remaining=young, margin=60)
    # 5 minutes in, it is one of the slow 5%: at 90% it needs about two hours more
    old = Rescuer._batch_remaining(record(submitted_at=now - 300), now, bands, 0.9, starting=0)
    assert old > HOUR
    assert at_risk(now, deadline=now + 30 * 60, remaining=old, margin=60)
    queued = Rescuer._batch_remaining(None, now, bands, 0.99, starting=dist.quantile(0.5))
    assert queued == dist.quantile(0.5)  # not running yet: what a batch started now is given


def test_past_everything_seen_the_guard_judges_by_the_batchs_own_pace() -> None:
    bands = {ALL: learned([60.0] * 50)}
    now = 10_000.0
    halfway = Rescuer._batch_remaining(record(submitted_at=now - 600, done=5), now, bands, 0.99, starting=0)
    assert halfway == pytest.approx(600.0)  # half done in 10 minutes: 10 more
    assert Rescuer._batch_remaining(record(submitted_at=now - 600, done=0), now, bands, 0.99, starting=0) == 0.0


def test_a_stall_is_no_progress_past_the_stall_quantile() -> None:
    dist = learned([60.0] * 100)
    stall_after = dist.quantile(0.995)
    assert is_stalled(elapsed=stall_after + 1, done=0, stall_after=stall_after)
    assert is_stalled(elapsed=stall_after + 1, done=None, stall_after=stall_after)  # progress not reported
    assert not is_stalled(elapsed=stall_after + 1, done=3, stall_after=stall_after)  # slow, but moving
    assert not is_stalled(elapsed=stall_after - 1, done=0, stall_after=stall_after)
    assert not is_stalled(elapsed=10 * HOUR, done=0, stall_after=None)  # not learned: the guard alone watches
