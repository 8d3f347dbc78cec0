"""The worker against a real Redis and the simulated upstream over HTTP: batches, results, retries, deadlines."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.providers.base import ErrorClass, ProviderError
from proxy.simulator.engine import expected_content
from proxy.store.keys import group_tag
from proxy.store.records import JobView
from proxy.worker.runner import Worker
from tests.support.deferred_env import DeferredEnv, chat_body, deferred_env
from tests.support.waiting import wait_until

MODELS = ("gpt-4o-mini", "gpt-5-mini")


def content_of(view: JobView) -> str:
    assert view.response is not None, view
    content: str = orjson.loads(view.response)["choices"][0]["message"]["content"]
    return content


async def run_burst(env: DeferredEnv, *, workers: int = 1, within: float = 60) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(Worker(env.runtime, worker_id=f"w{n}").run(burst=True) for n in range(workers))), within
    )


async def test_two_thousand_jobs_across_two_models_get_their_own_answers(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url) as env:
        bodies = [chat_body(MODELS[i % 2], f"question number {i}") for i in range(2000)]
        views = []
        for start in range(0, len(bodies), 50):
            views += await asyncio.gather(*(env.accept(body) for body in bodies[start : start + 50]))
        await run_burst(env, within=110)  # a hang detector, not a speed check: ~10 s alone, several times that loaded
        finished = await env.store.jobs.get_many([view.id for view in views])
        for body, view in zip(bodies, finished, strict=True):
            assert view is not None
            assert view.status == "completed"
            assert view.lane == "batch"
            assert content_of(view) == expected_content(body)
        batches = env.provider_batches()
        assert sorted(batch["request_counts"]["total"] for batch in batches) == [1000, 1000]
        assert {batch["completion_window"] for batch in batches} == {"24h"}
        auth = {"authorization": "Bearer sk-x"}
        listing = await asyncio.to_thread(httpx.get, env.simulator_url + "/v1/files", headers=auth)
        remaining = {file["id"] for file in listing.json()["data"]}
        assert remaining == {batch["output_file_id"] for batch in batches}  # inputs are deleted once ended
        assert len({batch["metadata"]["batchgate_batch"] for batch in batches}) == 2


async def test_expired_batch_keeps_its_finished_lines_and_retries_the_rest(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url, simulator={"finish_fraction": 0.5, "expiry_s": 1.5}) as env:
        views = [await env.accept(chat_body("gpt-4o-mini", f"q{i}")) for i in range(40)]
        worker = asyncio.create_task(run_burst(env))

        async def first_batch_created() -> bool:
            return len(env.provider_batches()) == 1

        await wait_until(first_batch_created, timeout=30)
        env.configure_simulator(finish_fraction=1.0)
        await worker
        batches = sorted(env.provider_batches(), key=lambda batch: batch["created_at"])
        assert [batch["status"] for batch in batches] == ["expired", "completed"]
        assert batches[0]["request_counts"]["completed"] == 20
        assert batches[1]["request_counts"]["total"] == 20  # only the unfinished half went again
        finished = await env.store.jobs.get_many([view.id for view in views])
        assert all(view is not None and view.status == "completed" for view in finished)
        assert Counter(view.attempts for view in finished if view) == {0: 20, 1: 20}


async def test_per_line_errors_fail_permanent_lines_and_retry_transient_ones(tmp_path: Path, redis_url: str) -> None:
    knobs = {"line_400_rate": 0.25, "line_500_rate": 0.25, "seed": 7}
    async with deferred_env(tmp_path, redis_url, simulator=knobs) as env:
        views = [await env.accept(chat_body("gpt-4o-mini", f"line {i}")) for i in range(80)]
        worker = asyncio.create_task(run_burst(env))

        async def first_batch_created() -> bool:
            return len(env.provider_batches()) == 1

        await wait_until(first_batch_created, timeout=30)
        env.configure_simulator(line_400_rate=0.0, line_500_rate=0.0)
        await worker
        finished = [view for view in await env.store.jobs.get_many([view.id for view in views]) if view]
        failed = [view for view in finished if view.status == "failed"]
        completed = [view for view in finished if view.status == "completed"]
        assert len(failed) + len(completed) == 80
        assert failed
        assert completed
        assert all(view.error and view.error["type"] == "invalid_request_error" for view in failed)
        assert all(view.attempts == 0 for view in failed)
        retried = [view for view in completed if view.attempts == 1]
        assert retried  # the 500 lines went again in a second batch and succeeded
        assert len(env.provider_batches()) == 2


async def test_cancelled_jobs_are_never_answered(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url, simulator={"turnaround_s": 1.5}) as env:
        views = [await env.accept(chat_body("gpt-4o-mini", f"c{i}")) for i in range(3)]
        assert (await env.store.jobs.cancel(views[0].id, retention=60)).outcome == "cancelled"
        worker = asyncio.create_task(run_burst(env))

        async def submitted() -> bool:
            view = await env.store.jobs.get(views[1].id)
            return view is not None and view.status == "submitted"

        await wait_until(submitted, timeout=30)
        result = await env.store.jobs.cancel(views[1].id, retention=60)
        assert result.outcome == "cancelled"
        assert result.batch_remaining == 1
        await worker
        first, second, third = await env.store.jobs.get_many([view.id for view in views])
        assert first
        assert second
        assert third
        assert (first.status, second.status, third.status) == ("cancelled", "cancelled", "completed")
        assert second.response is None
        assert [batch["request_counts"]["total"] for batch in env.provider_batches()] == [2]


async def test_two_workers_racing_on_one_queue_submit_each_job_once(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url, batching={"max_requests": 50}) as env:
        views = [await env.accept(chat_body(MODELS[i % 2], f"race {i}")) for i in range(300)]
        await run_burst(env, workers=2)
        finished = await env.store.jobs.get_many([view.id for view in views])
        assert all(view is not None and view.status == "completed" for view in finished)
        batches = env.provider_batches()
        assert sum(batch["request_counts"]["total"] for batch in batches) == 300
        assert max(batch["request_counts"]["total"] for batch in batches) == 50  # batching.max_requests
        assert len({batch["metadata"]["batchgate_batch"] for batch in batches}) == len(batches)


async def test_a_deadline_too_short_for_the_batch_lane_is_answered_synchronously(
    tmp_path: Path, redis_url: str
) -> None:
    async with deferred_env(tmp_path, redis_url) as env:
        body = chat_body("gpt-4o-mini", "urgent")
        view = await env.accept(body, deadline_in=4)  # turnaround estimate 5 s + safety margin 2 s
        assert view.lane == "sync"
        await run_burst(env, within=10)
        done = await env.store.jobs.get(view.id)
        assert done is not None
        assert done.status == "completed"
        assert done.lane == "sync"
        assert done.finished_at is not None
        assert view.deadline is not None
        assert done.finished_at < view.deadline
        assert content_of(done) == expected_content(body)
        assert env.provider_batches() == []


async def test_flex_lane_job_is_answered_on_the_flex_tier(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url) as env:
        view = await env.accept(chat_body("gpt-5-mini", "flexible"), lane="flex")
        await run_burst(env, within=10)
        done = await env.store.jobs.get(view.id)
        assert done is not None
        assert done.status == "completed"
        assert done.lane == "flex"
        assert done.response is not None
        assert orjson.loads(done.response).get("service_tier") == "flex"


async def test_a_stalled_batch_is_rescued_before_the_deadline(tmp_path: Path, redis_url: str) -> None:
    sections = {"batching": {"max_wait": "1s", "turnaround_estimate": "2s"}}
    async with deferred_env(tmp_path, redis_url, simulator={"finish_fraction": 0.0}, **sections) as env:
        bodies = [chat_body("gpt-4o-mini", f"stall {i}") for i in range(5)]
        views = [await env.accept(body, deadline_in=8) for body in bodies]
        await run_burst(env, within=30)
        finished = await env.store.jobs.get_many([view.id for view in views])
        for body, view, done in zip(bodies, views, finished, strict=True):
            assert done is not None
            assert done.status == "completed"
            assert done.rescued
            assert done.lane == "sync"
            assert done.finished_at is not None
            assert view.deadline is not None
            assert done.finished_at < view.deadline
            assert content_of(done) == expected_content(body)
        (batch,) = env.provider_batches()
        assert batch["status"] in ("cancelling", "cancelled")


async def test_the_configured_completion_window_is_what_the_provider_receives(tmp_path: Path, redis_url: str) -> None:
    """`batching.completion_window` goes out with every batch: a window OpenAI does not offer is refused upstream
    (the simulator answers as OpenAI does), so nothing is created and the jobs stay with their batch."""
    async with deferred_env(tmp_path, redis_url, batching={"completion_window": "1h"}) as env:
        views = [await env.accept(chat_body("gpt-4o-mini", f"window {i}")) for i in range(3)]
        await Worker(env.runtime, worker_id="w1").submitter.flush(group_tag("gpt-4o-mini"), "gpt-4o-mini", drain=True)
        assert env.provider_batches() == []
        finished = await env.store.jobs.get_many([view.id for view in views])
        assert all(view is not None and not view.is_final for view in finished)

        async def one_request() -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
            yield "probe", chat_body("gpt-4o-mini", "probe")

        client = env.runtime.batch_client("gpt-4o-mini")
        prepared = await client.prepare(one_request(), metadata={})
        with pytest.raises(ProviderError) as refused:
            await client.create(prepared.ref, metadata={})
        assert refused.value.classification is ErrorClass.BAD_REQUEST
        assert (refused.value.code, "'1h'" in refused.value.message) == ("invalid_value", True)
        await client.cleanup(prepared.ref)
