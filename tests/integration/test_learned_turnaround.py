"""The learned turnaround against a real Redis and the simulated upstream: shared by every worker through the
store, learned from ended batches, and a stalled batch cancelled with its jobs re-batched within their deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio

from proxy.jobs.render import job_object
from proxy.jobs.turnaround import ALL, bucket_of
from proxy.jobs.turnaround_book import TurnaroundBook, load_turnarounds
from proxy.settings import Config
from proxy.store.store import Store
from proxy.worker.runner import Worker
from tests.support.deferred_env import chat_body, deferred_env
from tests.support.stack import config_document
from tests.support.waiting import wait_until

MODEL = "gpt-4o-mini"


async def test_observations_are_shared_through_redis_and_decay_with_the_half_life(
    redis_client: redis.asyncio.Redis,
) -> None:
    now = [1_000_000.0]
    store = Store.create(redis_client, clock=lambda: now[0])
    config = Config.model_validate(config_document("http://127.0.0.1:1", worker={"turnaround_min_batches": 5}))
    for _ in range(10):
        await store.turnarounds.observe(MODEL, ("1-99", ALL), bucket=bucket_of(1000.0), half_life=3600.0)
    other_worker = TurnaroundBook(Store.create(redis_client, clock=lambda: now[0]), lambda: config)
    slow = (await other_worker.fresh(MODEL))[ALL]
    assert slow.learned
    assert slow.seen == 10
    assert 800 < slow.quantile(0.5) < 1100
    now[0] += 10 * 3600.0  # ten half-lives: the ten slow batches now weigh less than one new one
    for _ in range(5):
        await store.turnarounds.observe(MODEL, ("100-999", ALL), bucket=bucket_of(20.0), half_life=3600.0)
    bands = await load_turnarounds(store, config, MODEL)
    assert bands[ALL].seen == 15
    assert bands[ALL].quantile(0.99) < 30
    assert bands["1-99"].quantile(0.5) > 800  # a band keeps its own batches
    assert bands["100-999"].learned
    assert not bands["1000-9999"].learned


async def test_a_stalled_batch_is_cancelled_and_its_jobs_rebatched_within_their_deadline(
    tmp_path: Path, redis_url: str
) -> None:
    sections = {
        "batching": {"max_wait": "0.5s", "turnaround_estimate": "1h"},
        "worker": {"turnaround_min_batches": 3, "cancel_lead": 2},
    }
    async with deferred_env(tmp_path, redis_url, simulator={"finish_fraction": 0.0}, **sections) as env:
        book = env.runtime.turnarounds
        assert book is not None
        for _ in range(3):  # three batches ended in about a second: learned (the 1 h estimate no longer counts)
            await book.observe(MODEL, jobs=5, seconds=1.0)
        bodies = [chat_body(MODEL, f"stall {i}") for i in range(5)]
        views = [await env.accept(body, deadline_in=60) for body in bodies]
        assert all(view.lane == "batch" for view in views)  # the 1 h estimate would have sent them sync at once
        shown = job_object(views[0])
        assert views[0].created_at < shown["eta"] <= shown["eta_p90"] < views[0].created_at + 10
        worker = asyncio.create_task(Worker(env.runtime, worker_id="w1").run(burst=True))

        async def first_batch_created() -> bool:
            return len(env.provider_batches()) == 1

        await wait_until(first_batch_created, timeout=30)
        env.configure_simulator(finish_fraction=1.0)
        await asyncio.wait_for(worker, 60)
        batches = sorted(env.provider_batches(), key=lambda batch: batch["created_at"])
        assert [batch["status"] for batch in batches] == ["cancelled", "completed"]
        assert batches[1]["request_counts"]["total"] == 5
        finished = await env.store.jobs.get_many([view.id for view in views])
        for view, done in zip(views, finished, strict=True):
            assert done is not None
            assert (done.status, done.lane, done.rescued) == ("completed", "batch", False)
            assert done.finished_at is not None
            assert view.deadline is not None
            assert done.finished_at < view.deadline
            assert done.attempts == 0  # the stall was the provider's, not the job's
        registry = env.runtime.metrics.registry
        assert registry.get_sample_value("batchgate_batches_stalled_total", {"queue": MODEL}) == 1
        learned_from = (await load_turnarounds(env.store, env.runtime.config, MODEL))[ALL].seen
        assert learned_from == 4  # three seeded and the completed batch: the cancelled one says nothing
        watcher = Worker(env.runtime, worker_id="w2").queue_watch
        assert await watcher.refresh(await env.store.batches.groups(), force=True)
        labels = {"queue": MODEL, "band": "all", "quantile": "0.99"}
        learned_p99 = registry.get_sample_value("batchgate_batch_turnaround_learned_seconds", labels)
        assert learned_p99 is not None
        assert 0 < learned_p99 < 5


async def test_a_batch_still_running_near_a_jobs_last_safe_moment_is_cancelled_its_finished_lines_used(
    tmp_path: Path, redis_url: str
) -> None:
    sections = {
        "batching": {"max_wait": "0.5s", "turnaround_estimate": "1h"},
        "worker": {"turnaround_min_batches": 3, "safety_margin": 2, "cancel_lead": 3},
    }
    # half the lines finish within the second, the other half hang until the batch is cancelled
    async with deferred_env(tmp_path, redis_url, simulator={"finish_fraction": 0.5}, **sections) as env:
        book = env.runtime.turnarounds
        assert book is not None
        for _ in range(3):
            await book.observe(MODEL, jobs=6, seconds=1.0)
        bodies = [chat_body(MODEL, f"late {i}") for i in range(6)]
        views = [await env.accept(body, deadline_in=12) for body in bodies]
        assert all(view.lane == "batch" for view in views)
        await asyncio.wait_for(Worker(env.runtime, worker_id="w1").run(burst=True), 60)
        [batch] = env.provider_batches()
        assert batch["status"] == "cancelled"
        assert batch["request_counts"]["completed"] == 3
        finished = await env.store.jobs.get_many([view.id for view in views])
        lanes = sorted((done.status, done.lane, done.rescued) for done in finished if done is not None)
        # the finished lines answered their jobs; the others were rescued (no time left for another batch)
        assert lanes == [("completed", "batch", False)] * 3 + [("completed", "sync", True)] * 3
        for view, done in zip(views, finished, strict=True):
            assert done is not None
            assert done.finished_at is not None
            assert view.deadline is not None
            assert done.finished_at < view.deadline
        await env.runtime.events.flush()  # type: ignore[attr-defined]
        registry = env.runtime.metrics.registry
        wasted = [sample for metric in registry.collect() if metric.name == "batchgate_waste_usd"
                  for sample in metric.samples if sample.name.endswith("_total") and sample.value]  # fmt: skip
        assert wasted == []  # no billed line answered nobody
