"""Deciding the batch lane by expected cost (lane_rule expected_cost), with the deadline guard's rescue at the last
safe moment as the safety net, against the bench's turnaround distribution (median 15 min, p90 ~1 h, p99 ~3 h)."""

from __future__ import annotations

import random

import pytest

from proxy.jobs.turnaround import ALL, Turnaround, break_even
from proxy.jobs.turnaround_book import TurnaroundBook
from proxy.policy.decide import choose_lane
from proxy.policy.facts import LaneFacts
from proxy.settings import Config
from proxy.store.records import BatchRecord
from proxy.worker.rescuer import Rescuer, cancel_due
from tests.support.stack import config_document

MINUTE, HOUR = 60.0, 3600.0
MARGIN = 10 * MINUTE
FLEX_PRICE = 0.95 * 0.5 + 0.05  # 5% of flex calls refused and paid at list


@pytest.fixture(scope="module")
def day() -> Turnaround:
    """The bench's upstream: log-normal turnaround, median 15 min, sigma 1.08."""
    dice = random.Random(3)
    dist = Turnaround(HOUR, min_batches=20)
    for _ in range(3000):
        dist = dist.observed(dice.lognormvariate(6.8024, 1.08))  # ln(900 s) = 6.8024
    return dist


def lanes(need: float, *, flex: bool) -> LaneFacts:
    return LaneFacts(batch_turnaround=need, supports_flex=flex, flex_turnaround=15 * MINUTE, safety_margin=MARGIN)


def expected_cost(dist: Turnaround, deadline: float) -> float:
    """A batch's expected price share: 0.5 when it ends by the last safe moment, else list plus its line."""
    ends = dist.cdf(deadline - MARGIN)
    return ends * 0.5 + (1 - ends) * 1.5


def test_break_even_is_where_a_batch_rescued_when_late_costs_what_the_alternative_costs() -> None:
    assert break_even(batch=0.5, rescue=1.0, waste=0.5, alternative=1.0) == pytest.approx(0.5)
    assert break_even(batch=0.5, rescue=1.0, waste=0.5, alternative=FLEX_PRICE) == pytest.approx(0.975)
    assert break_even(batch=0.5, rescue=1.0, waste=0.0, alternative=1.0) == 0.0  # a rescue costs no more than sync
    assert break_even(batch=0.5, rescue=1.0, waste=0.5, alternative=0.5) == 1.0  # as cheap as a sure batch


def test_without_flex_a_deadline_of_one_hour_is_batched_by_expected_cost_and_sent_sync_at_99_percent(
    day: Turnaround,
) -> None:
    level = break_even(batch=0.5, rescue=1.0, waste=0.5, alternative=1.0)
    deadline = HOUR
    assert choose_lane("batch", deadline, lanes(day.quantile(level), flex=False))[0] == "batch"
    assert choose_lane("batch", deadline, lanes(day.quantile(0.99), flex=False))[0] == "sync"
    assert expected_cost(day, deadline) < 1.0  # cheaper than sync at once, late batches rescued included
    too_short = day.quantile(level) + MARGIN - 1
    assert choose_lane("batch", too_short, lanes(day.quantile(level), flex=False))[0] == "sync"
    assert expected_cost(day, too_short) >= 1.0 - 0.01  # at the break-even point, give or take a bucket


def test_with_flex_a_short_deadline_takes_flex_and_a_long_one_the_batch(day: Turnaround) -> None:
    level = break_even(batch=0.5, rescue=1.0, waste=0.5, alternative=FLEX_PRICE)
    need = day.quantile(level)
    assert HOUR < need < 3 * HOUR  # the 97.5th percentile: about two hours
    assert choose_lane("batch", HOUR, lanes(need, flex=True))[0] == "flex"
    assert expected_cost(day, HOUR) > FLEX_PRICE  # batching it would cost more on average
    assert choose_lane("batch", 4 * HOUR, lanes(need, flex=True))[0] == "batch"
    assert expected_cost(day, 4 * HOUR) < FLEX_PRICE


def test_the_book_gives_the_break_even_level_per_model_and_the_confidence_under_the_confidence_rule() -> None:
    document = config_document("http://127.0.0.1:1", policy={"flex_unavailable_rate": 0.05})
    book = TurnaroundBook(None, lambda: Config.model_validate(document))  # type: ignore[arg-type]
    assert book.level("gpt-4o-mini") == pytest.approx(0.5)  # no flex tier: the alternative is sync at list
    assert book.level("gpt-5-mini") == pytest.approx(0.975)  # flex at half price, 5% of it refused
    document["worker"] = {"lane_rule": "confidence", "turnaround_confidence": 0.95}
    assert book.level("gpt-4o-mini") == 0.95
    document["worker"] = {"turnaround_confidence": 0.3}
    assert book.level("gpt-5-mini") == 0.3  # never above the configured confidence


def running(*, submitted_at: float, cancel_requested: bool = False, state: str = "submitted") -> BatchRecord:
    return BatchRecord(
        id="b1", tag="t", group="m", state=state, created_at=submitted_at, jobs=10, size=1, file_id="f",
        provider_batch_id="p", provider_state="in_progress", submitted_at=submitted_at, jobs_marked=True,
        poll_interval=1.0, total=10, done=3, lines=10, cancel_requested=cancel_requested, ended_at=None,
    )  # fmt: skip


def test_a_job_waits_for_its_batch_until_its_last_safe_moment(day: Turnaround) -> None:
    bands = {ALL: day}
    now = 100_000.0
    slow = running(submitted_at=now - 2 * HOUR)  # past its p90: at 99% it needs hours more
    assert Rescuer._batch_remaining(slow, now, bands, 0.99, starting=0) > HOUR
    assert Rescuer._batch_remaining(slow, now, bands, 0.99, starting=0, last_moment=True) == 0.0
    # a batch still being built: its line goes upstream anyway, so its jobs wait for the last safe moment too
    building = running(submitted_at=now, state="building")
    assert Rescuer._batch_remaining(building, now, bands, 0.99, starting=1800.0) == 1800.0
    assert Rescuer._batch_remaining(building, now, bands, 0.99, starting=1800.0, last_moment=True) == 0.0


def test_a_late_batch_is_cancelled_within_the_lead_of_a_jobs_last_safe_moment(day: Turnaround) -> None:
    bands = {ALL: day}
    now = 100_000.0
    batch = running(submitted_at=now - HOUR)
    lead = 10 * MINUTE
    assert not cancel_due(batch, bands, now, deadline=now + MARGIN + lead + 1, margin=MARGIN, lead=lead)
    assert cancel_due(batch, bands, now, deadline=now + MARGIN + lead, margin=MARGIN, lead=lead)
    deadline = now + MARGIN
    assert not cancel_due(running(submitted_at=now - HOUR, cancel_requested=True), bands, now,
                          deadline=deadline, margin=MARGIN, lead=lead)  # fmt: skip
    assert not cancel_due(running(submitted_at=now, state="building"), bands, now,
                          deadline=deadline, margin=MARGIN, lead=lead)  # fmt: skip
    unlearned = {ALL: Turnaround(HOUR)}
    assert not cancel_due(batch, unlearned, now, deadline=deadline, margin=MARGIN, lead=lead)


def test_the_break_even_level_uses_the_providers_own_batch_discount() -> None:
    # Groq's batch takes 25% off: a late batch costs 0.75 + list, so batching pays only above 75% in time; at the
    # 50% level a batch would cost 1.25x list on average, more than sync at once
    models = {"gpt-4o-mini": "openai/gpt-4o-mini", "llama": "groq/llama-3.1-8b-instant"}
    document = config_document("http://127.0.0.1:1", models=models)
    book = TurnaroundBook(None, lambda: Config.model_validate(document))  # type: ignore[arg-type]
    assert book.level("llama") == pytest.approx(break_even(batch=0.75, rescue=1.0, waste=0.75, alternative=1.0))
    assert book.level("llama") == pytest.approx(0.75)
    assert book.level("gpt-4o-mini") == pytest.approx(0.5)
    document["pricing"] = {"batch_discounts": {"openai": 0.4}}  # the config's override counts too
    assert book.level("gpt-4o-mini") == pytest.approx(break_even(batch=0.6, rescue=1.0, waste=0.6, alternative=1.0))
