"""Each rescue reason is emitted by the call site that decides it, reaches `batchgate_rescues_total{reason}`
and the job's stored reason; a failure batchgate decides carries its FailureReason as the error code. The
worker against a real Redis and the simulated upstream over HTTP.

Timing of the batch cases (turnaround estimate 5 s, safety margin 2 s, deadline in 10 s): a batch fits at
acceptance (0 + 5 < 10 - 2) but no longer once the batch has ended after 3 s (3 + 5 > 8), while the deadline
guard would act on the running batch only after 8 s: the ingest is what sends the jobs synchronously.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.events import WorkerEvents
from proxy.reasons import RescueReason
from proxy.worker.runner import Worker
from tests.support.deferred_env import DeferredEnv, chat_body, deferred_env

DEADLINE_IN = 10


def rescues(registry: CollectorRegistry) -> dict[str, float]:
    """batchgate_rescues_total by reason, only the reasons counted at least once."""
    counted = {reason.value: registry.get_sample_value("batchgate_rescues_total", {"reason": reason.value})
               for reason in RescueReason}  # fmt: skip
    return {reason: value for reason, value in counted.items() if value}


async def run_burst(env: DeferredEnv, *, events: WorkerEvents | None = None, within: float = 40) -> None:
    await asyncio.wait_for(Worker(env.runtime, events=events).run(burst=True), within)


async def rescued_jobs(env: DeferredEnv, count: int, *, events: WorkerEvents | None = None) -> list[str | None]:
    """Accept `count` batch jobs due in DEADLINE_IN s, run the worker; each must be completed by a rescue.
    Returns their stored rescue reasons."""
    views = [await env.accept(chat_body("gpt-4o-mini", f"q{i}"), deadline_in=DEADLINE_IN) for i in range(count)]
    await run_burst(env, events=events)
    finished = await env.store.jobs.get_many([view.id for view in views])
    reasons = []
    for done in finished:
        assert done is not None
        assert done.status == "completed", done
        assert done.rescued
        assert done.lane == "sync"
        reasons.append(done.rescue_reason)
    return reasons


@pytest.mark.parametrize(
    ("knobs", "reason", "upstream_status"),
    [
        # two lines in a batch that may hold one: the upstream fails it when validation ends, 3 s after creation
        ({"max_batch_lines": 1, "validating_s": 3.0}, "batch_failed", "failed"),
        ({"finish_fraction": 0.0, "expiry_s": 3.0}, "batch_expired", "expired"),
    ],
)
async def test_a_batch_ending_with_no_time_left_sends_its_jobs_synchronously_for_its_reason(
    tmp_path: Path, redis_url: str, knobs: dict[str, float], reason: str, upstream_status: str
) -> None:
    async with deferred_env(tmp_path, redis_url, simulator=knobs) as env:
        reasons = await rescued_jobs(env, 2)
        assert reasons == [reason, reason]
        assert rescues(env.runtime.metrics.registry) == {reason: 2}
        (batch,) = env.provider_batches()
        assert batch["status"] == upstream_status


async def test_a_batch_refused_whole_with_time_left_is_bisected_and_its_halves_answered(
    tmp_path: Path, redis_url: str
) -> None:
    """A refusal naming no line, with time for more batches: split in halves (worker/triage.py), no rescue."""
    async with deferred_env(tmp_path, redis_url, simulator={"max_batch_lines": 1}) as env:
        views = [await env.accept(chat_body("gpt-4o-mini", f"q{i}")) for i in range(2)]  # no deadline: no rescue
        await run_burst(env)
        finished = await env.store.jobs.get_many([view.id for view in views])
        for done in finished:
            assert done is not None
            assert done.status == "completed", done
            assert done.lane == "batch"
            assert not done.rescued
        batches = env.provider_batches()
        assert sorted(batch["status"] for batch in batches) == ["completed", "completed", "failed"]
        assert [batch["request_counts"]["total"] for batch in batches if batch["status"] == "completed"] == [1, 1]
        assert rescues(env.runtime.metrics.registry) == {}


async def test_flex_unavailable_answers_at_list_price_and_is_counted(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url, simulator={"flex_429_rate": 1.0}) as env:
        view = await env.accept(chat_body("gpt-5-mini", "flexible"), lane="flex")
        await run_burst(env, within=20)
        done = await env.store.jobs.get(view.id)
        assert done is not None
        assert done.status == "completed"
        assert done.lane == "sync"  # answered, and paid, at list price
        assert rescues(env.runtime.metrics.registry) == {"flex_unavailable": 1}


async def test_a_deadline_too_short_for_a_batch_is_counted_once_per_job(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url) as env:
        body = chat_body("gpt-4o-mini", "urgent")
        first = await env.accept(body, deadline_in=4, idempotency_key="k1")
        again = await env.accept(body, deadline_in=4, idempotency_key="k1")  # the same job: not counted again
        await env.accept(chat_body("gpt-4o-mini", "relaxed"), deadline_in=3600)
        assert first.id == again.id
        assert first.lane == "sync"
        assert rescues(env.runtime.metrics.registry) == {"deadline_too_short": 1}


class RescueRecorder(WorkerEvents):
    """A test observer: overrides the one event it watches, every other event is the protocol's no-op."""

    def __init__(self) -> None:
        self.rescued: list[tuple[str, RescueReason]] = []

    def rescue(self, *, job_id: str, group: str, reason: RescueReason) -> None:
        self.rescued.append((job_id, reason))


async def test_the_deadline_guard_reports_a_job_at_risk_in_its_batch_to_any_observer(
    tmp_path: Path, redis_url: str
) -> None:
    sections = {"batching": {"max_wait": "1s", "turnaround_estimate": "2s"}}
    async with deferred_env(tmp_path, redis_url, simulator={"finish_fraction": 0.0}, **sections) as env:
        recorder = RescueRecorder()
        view = await env.accept(chat_body("gpt-4o-mini", "stall"), deadline_in=8)
        await run_burst(env, events=recorder, within=30)
        done = await env.store.jobs.get(view.id)
        assert done is not None
        assert done.status == "completed"
        assert done.rescue_reason == "deadline_at_risk_in_batch"
        assert recorder.rescued == [(view.id, RescueReason.DEADLINE_AT_RISK_IN_BATCH)]
        assert rescues(env.runtime.metrics.registry) == {}  # this worker reported to the recorder alone
