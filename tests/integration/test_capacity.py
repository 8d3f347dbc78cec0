"""Capacity-aware submission against the strict simulator's enqueued-token limit: a backlog far over the limit is
paced into batches that fit and answered at batch price, never refused; a refused batch keeps its upload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio

from proxy.simulator.engine import expected_content
from proxy.store.keys import group_tag
from proxy.store.store import Store
from proxy.worker.process import run_in_app
from proxy.worker.runner import Worker
from tests.support.deferred_env import DeferredEnv, chat_body, deferred_env
from tests.support.stack import MASTER_KEY, running_stack
from tests.support.waiting import wait_until, wait_until_sync

MODEL = "gpt-4o-mini"
LIMIT = 400  # simulated enqueued-token limit: a 400-character prompt is ~107 simulated tokens, 3 jobs do not fit
JOBS = 30  # ~3,200 simulated prompt tokens: 8x the limit
FAST = {"turnaround_s": 0.5, "validating_s": 0.05, "finalizing_s": 0.05}


def prompt(i: int) -> str:
    return f"backlog question {i:03d} " + "lorem ipsum " * 32


def uploaded_files(env: DeferredEnv) -> set[str]:
    listing = httpx.get(f"{env.simulator_url}/v1/files", headers={"authorization": "Bearer sk-x"}, timeout=10)
    return {item["id"] for item in listing.json()["data"] if item["purpose"] == "batch"}


async def test_a_backlog_far_over_the_enqueued_token_limit_is_paced_and_answered_at_batch_price(
    tmp_path: Path, redis_url: str
) -> None:
    # the configured budget is 10x what the provider allows: the first refusal teaches the worker the real limit
    simulator = {**FAST, "enqueued_token_limits": {MODEL: LIMIT}}
    with running_stack(
        tmp_path,
        redis_url,
        background=[run_in_app],
        simulator=simulator,
        batching={"max_wait": "1s", "turnaround_estimate": "5s", "enqueued_token_limit": 10 * LIMIT},
    ) as stack:
        client = stack.client(timeout=30)
        jobs = []
        for i in range(JOBS):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": prompt(i)}],
                extra_headers={"X-Batch-Deadline": "1h"},
            )
            assert raw.http_response.status_code == 202, raw.http_response.text
            jobs.append(raw.http_response.json()["id"])
        finished = stack.final_jobs(jobs, timeout=240)
        for i, job in enumerate(finished):
            assert (job["status"], job["lane"]) == ("completed", "batch"), job
            assert job["response"]["choices"][0]["message"]["content"] == expected_content(chat_body(MODEL, prompt(i)))
        ledger = stack.ledger()["models"][MODEL]
        assert ledger["batch"]["requests"] == JOBS  # every call paid at batch price
        assert ledger["sync"]["requests"] == 0
        with stack.simulator() as sim:
            batches = sim.get("/v1/batches", params={"limit": 100}, headers={"authorization": "Bearer sk-x"}).json()
        completed = [batch for batch in batches["data"] if batch["status"] == "completed"]
        refused = [batch for batch in batches["data"] if batch["status"] == "failed"]
        assert sum(batch["request_counts"]["total"] for batch in completed) == JOBS
        assert all(batch["request_counts"]["total"] <= 3 for batch in completed)  # paced to the reported limit
        assert refused, "the over-sized first batch was refused upstream"
        assert {error["code"] for batch in refused for error in batch["errors"]["data"]} == {"token_limit_exceeded"}
        client_redis = redis.asyncio.Redis.from_url(redis_url)
        try:
            assert await Store.create(client_redis).batches.reported_token_limit(group_tag(MODEL)) == LIMIT
        finally:
            await client_redis.aclose()


def capacity_refusals(env: DeferredEnv) -> float:
    value = env.runtime.metrics.registry.get_sample_value("batchgate_capacity_refusals_total", {"queue": MODEL})
    return value or 0.0


@pytest.mark.parametrize("flavor", ["openai", "azure"])
async def test_a_refused_batch_keeps_its_upload_and_spends_no_attempt(
    tmp_path: Path, redis_url: str, flavor: str
) -> None:
    """OpenAI fails the created batch, Azure refuses the create call: either way the same input is created again
    once capacity frees, and the jobs are answered from the batch lane with no attempt spent."""
    simulator = {**FAST, "turnaround_s": 3.0, "flavor": flavor, "enqueued_token_limits": {MODEL: LIMIT}}
    async with deferred_env(tmp_path, redis_url, simulator=simulator, batching={"enqueued_token_limit": LIMIT}) as env:
        # someone else's batch holds most of the limit: ours fits the budget but not what is left upstream
        client = env.runtime.batch_client(MODEL)

        async def foreign() -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
            yield "foreign", chat_body(MODEL, "someone else " + "x" * 1000)

        prepared = await client.prepare(foreign(), metadata={})
        await client.create(prepared.ref, metadata={})
        views = [await env.accept(chat_body(MODEL, prompt(i)), deadline_in=3600) for i in range(2)]
        worker = asyncio.create_task(Worker(env.runtime, worker_id="w1").run(burst=True))
        try:
            await wait_until(lambda: capacity_refusals(env) >= 1, timeout=60, what="a first capacity refusal")
            first = await asyncio.to_thread(uploaded_files, env)
            await wait_until(lambda: capacity_refusals(env) >= 2, timeout=60, what="a second capacity refusal")
            assert await asyncio.to_thread(uploaded_files, env) == first  # the same input, not uploaded again
            await asyncio.wait_for(worker, 120)
        finally:
            worker.cancel()
        finished = await env.store.jobs.get_many([view.id for view in views])
        assert [(view.status, view.lane, view.attempts) if view else None for view in finished] == [
            ("completed", "batch", 0)
        ] * 2
        ours = [batch for batch in env.provider_batches() if batch.get("metadata", {}).get("batchgate_batch")]
        states = sorted(batch["status"].lower() for batch in ours)
        if flavor == "azure":
            assert states == ["completed"]  # refused on create: nothing was registered upstream
        else:
            assert states[0] == "completed"
            assert set(states[1:]) == {"failed"}  # refused after the create: the same input created again
            assert len(states) >= 3
        assert len({batch["input_file_id"] for batch in ours}) == 1  # every attempt created from the one upload


def batch_custom_ids(env: DeferredEnv, batch: dict[str, Any]) -> list[str]:
    """The job ids a provider batch answered, read from its output file."""
    response = httpx.get(
        f"{env.simulator_url}/v1/files/{batch['output_file_id']}/content",
        headers={"authorization": "Bearer sk-x"},
        timeout=10,
    )
    response.raise_for_status()
    return [orjson.loads(line)["custom_id"] for line in response.content.splitlines() if line.strip()]


async def test_held_work_is_submitted_in_deadline_order(tmp_path: Path, redis_url: str) -> None:
    """Capacity lets three jobs in at a time; nine jobs with mixed deadlines arrive shuffled: each batch created
    upstream holds the earliest deadlines still waiting, whatever the order of arrival."""
    simulator = {**FAST, "enqueued_token_limits": {MODEL: LIMIT}}
    arrival = [4, 8, 1, 6, 0, 7, 3, 5, 2]  # deadline rank of the n-th job to arrive
    async with deferred_env(tmp_path, redis_url, simulator=simulator, batching={"enqueued_token_limit": LIMIT}) as env:
        rank_of = {}
        for i, rank in enumerate(arrival):
            view = await env.accept(chat_body(MODEL, prompt(i)), deadline_in=3600.0 * (rank + 1))
            rank_of[view.id] = rank
        await asyncio.wait_for(Worker(env.runtime, worker_id="w1").run(burst=True), 120)
        finished = await env.store.jobs.get_many(list(rank_of))
        assert [(view.status, view.lane) if view else None for view in finished] == [("completed", "batch")] * 9
        batches = await asyncio.to_thread(env.provider_batches)
        oldest_first = [batch for batch in reversed(batches) if batch["status"] == "completed"]
        ranks = [sorted(rank_of[job] for job in await asyncio.to_thread(batch_custom_ids, env, batch))
                 for batch in oldest_first]  # fmt: skip
    assert len(ranks) >= 3, ranks  # capacity held part of the queue back
    assert [rank for batch in ranks for rank in batch] == list(range(9)), ranks  # earliest deadline first


@pytest.mark.parametrize(("model", "overflow"), [("gpt-5-mini", "flex"), ("gpt-4o-mini", "sync")])
def test_held_jobs_that_cannot_wait_for_capacity_overflow_to_flex_where_the_model_has_it(
    tmp_path: Path, redis_url: str, model: str, overflow: str
) -> None:
    """The budget (1 token) is smaller than any job: capacity never lets the jobs in. When their deadline can no
    longer wait (turnaround estimate 12 s, deadline 20 s: at 7 s) the guard sends them at the flex tier (half
    price) when the model has one (the stack's gpt-5-mini) and flex still fits (2 s), at list price otherwise.
    The ledger books them at that lane's price."""
    with running_stack(
        tmp_path,
        redis_url,
        background=[run_in_app],
        simulator=FAST,
        worker={"flex_turnaround": "2s", "safety_margin": 1, "tick": 0.1},
        batching={"max_wait": "0.2s", "turnaround_estimate": "12s", "enqueued_token_limit": 1},
    ) as stack:
        client = stack.client(timeout=30)
        jobs = []
        for i in range(3):
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": prompt(i)}],
                extra_headers={"X-Batch-Deadline": "20s"},
            )  # fmt: skip
            assert raw.http_response.status_code == 202, raw.http_response.text
            assert raw.http_response.json()["lane"] == "batch"
            jobs.append(raw.http_response.json()["id"])
        finished = stack.final_jobs(jobs, timeout=60)
        assert [(job["status"], job["lane"], job.get("rescued")) for job in finished] == [
            ("completed", overflow, True)
        ] * 3
        upstream = stack.ledger()["models"][model]
        assert upstream[overflow]["requests"] == 3
        other = "sync" if overflow == "flex" else "flex"
        assert upstream.get(other, {}).get("requests", 0) == 0
        assert upstream.get("batch", {}).get("requests", 0) == 0

        def booked() -> dict[str, Any] | None:
            headers = {"authorization": f"Bearer {MASTER_KEY}"}
            report = httpx.get(f"{stack.url}/v1/savings", headers=headers, timeout=10).json()
            lanes = {row["lane"]: row for row in report["by_lane"]}
            return lanes if lanes.get(overflow, {}).get("requests") == 3 else None

        lane_row = wait_until_sync(booked, timeout=10, interval=0.1, what="the held jobs in the ledger")[overflow]
        assert Decimal(lane_row["paid_usd"]) == Decimal(upstream[overflow]["cost_usd"])  # at the lane's price
