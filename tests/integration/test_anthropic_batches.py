"""AnthropicBatchClient against the simulator's Anthropic face, directly and under the worker: lifecycle, cancel
and expiry mapping, per-line errors, and finding a batch again after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.providers.anthropic_batch import AnthropicBatchClient
from proxy.providers.base import (
    BatchInfo,
    BatchState,
    ErrorClass,
    LineOutcome,
    PreparedInput,
    ProviderError,
)
from proxy.simulator.engine import expected_content
from proxy.worker.runner import Worker
from tests.support.batch_clients import lines_of, pairs, until_ended
from tests.support.deferred_env import CLAUDE, DeferredEnv, chat_body, claude_models, deferred_env
from tests.support.stack import PROVIDER_KEY, simulator_server
from tests.support.waiting import wait_until

FAST = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}
BATCH_KEY = "batchgate_batch"


def anthropic_client(url: str, staging: Path) -> AnthropicBatchClient:
    return AnthropicBatchClient(
        base_url=url + "/v1", api_key=PROVIDER_KEY, upstream_model=CLAUDE, timeout=10, staging_dir=staging
    )


@contextlib.asynccontextmanager
async def batch_client(tmp_path: Path, **knobs: Any) -> AsyncIterator[tuple[AnthropicBatchClient, str]]:
    with simulator_server(**{**FAST, **knobs}) as upstream:
        client = anthropic_client(upstream.url, tmp_path / "staging")
        try:
            yield client, upstream.url
        finally:
            await client.aclose()


async def prepare(client: AnthropicBatchClient, count: int, name: str = "b1") -> PreparedInput:
    bodies = [(f"job_{i}", chat_body(CLAUDE, f"{name} question {i}")) for i in range(count)]
    return await client.prepare(pairs(bodies), metadata={BATCH_KEY: name})


async def submit(client: AnthropicBatchClient, count: int, name: str = "b1") -> BatchInfo:
    prepared = await prepare(client, count, name)
    assert prepared.requests == count
    return await client.create(prepared.ref, metadata={BATCH_KEY: name})


async def test_a_batch_completes_with_openai_shaped_answers(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, _):
        created = await submit(client, 5)
        assert created.state is BatchState.IN_PROGRESS
        assert created.batch_id.startswith("msgbatch_")
        assert created.total == 5
        assert not list((tmp_path / "staging").iterdir())  # the staged body is gone once sent
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed, info.failed) == (BatchState.COMPLETED, 5, 0)
        lines = await lines_of(client, info)
        assert sorted(line.custom_id for line in lines) == [f"job_{i}" for i in range(5)]
        for line in lines:
            index = int(line.custom_id.removeprefix("job_"))
            assert line.outcome is LineOutcome.SUCCEEDED
            assert line.body is not None
            assert line.body["object"] == "chat.completion"
            content = line.body["choices"][0]["message"]["content"]
            assert content == expected_content(chat_body(CLAUDE, f"b1 question {index}"))
            assert line.body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # litellm's usage, as on sync


async def test_cancel_maps_to_cancelling_then_cancelled_lines(tmp_path: Path) -> None:
    async with batch_client(tmp_path, finish_fraction=0.0, cancel_delay_s=0.3) as (client, _):
        created = await submit(client, 4)
        cancelling = await client.cancel(created.batch_id)
        assert cancelling.state is BatchState.CANCELLING
        info = await until_ended(client, created.batch_id)
        assert info.state is BatchState.CANCELLED
        lines = await lines_of(client, info)
        assert [line.outcome for line in lines] == [LineOutcome.CANCELLED] * 4
        assert all(line.transient and line.error_code == "batch_cancelled" for line in lines)


async def test_per_line_errors_keep_their_status_and_an_openai_error_body(tmp_path: Path) -> None:
    async with batch_client(tmp_path, line_400_rate=0.5, line_500_rate=0.5, seed=3) as (client, _):
        info = await until_ended(client, (await submit(client, 12)).batch_id)
        lines = await lines_of(client, info)
        assert info.failed == 12
        statuses = Counter(line.status_code for line in lines)
        assert set(statuses) == {400, 500}
        for line in lines:
            assert line.outcome is LineOutcome.ERRORED
            assert line.body is not None
            assert line.body["error"]["type"] == (
                "invalid_request_error" if line.status_code == 400 else "server_error"
            )
            assert line.transient is (line.status_code == 500)


async def test_a_crashed_submission_finds_its_batch_again_on_any_host(tmp_path: Path) -> None:
    """Another host (its own staging directory, no shared state) finds the batch from what the provider shows."""
    async with batch_client(tmp_path, turnaround_s=60.0, finish_fraction=0.0, cancel_delay_s=0.1) as (client, url):
        since = time.time()
        first_input = await prepare(client, 3, "first")
        first = await client.create(first_input.ref, metadata={BATCH_KEY: "first"})
        elsewhere = anthropic_client(url, tmp_path / "other-host")
        try:
            # still in progress: its custom_ids cannot be read yet, but it is the one batch of that size since then
            [found] = await elsewhere.find_batches({BATCH_KEY: "first"}, since=since, prepared=first_input.ref)
            assert (found.batch_id, found.metadata) == (first.batch_id, {BATCH_KEY: "first"})
            assert (
                await elsewhere.find_batches({BATCH_KEY: "first"}, since=time.time() + 120, prepared=first_input.ref)
                == []
            )

            # a second batch of the same size makes the running ones ambiguous: none is taken
            second_input = await prepare(client, 3, "second")
            second = await client.create(second_input.ref, metadata={BATCH_KEY: "second"})
            assert await elsewhere.find_batches({BATCH_KEY: "first"}, since=since, prepared=first_input.ref) == []

            # once ended, the marker in their custom_ids tells them apart exactly
            for batch in (first, second):
                await client.cancel(batch.batch_id)
                await until_ended(client, batch.batch_id)
            [again] = await elsewhere.find_batches({BATCH_KEY: "first"}, since=since, prepared=first_input.ref)
            assert again.batch_id == first.batch_id
            [other] = await elsewhere.find_batches({BATCH_KEY: "second"}, since=since, prepared=second_input.ref)
            assert other.batch_id == second.batch_id
            assert await elsewhere.find_batches({BATCH_KEY: "never-sent"}, since=since, prepared=first_input.ref) == []
            assert not (tmp_path / "staging" / "journal").exists()
        finally:
            await elsewhere.aclose()


async def test_an_unknown_staged_input_is_reported_as_gone(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, _):
        for ref in ("staged-0123abcd", f"staged-{'0' * 32}-3"):
            with pytest.raises(ProviderError) as caught:
                await client.create(ref, metadata={BATCH_KEY: "x"})
            assert caught.value.classification is ErrorClass.NOT_FOUND  # the submitter then prepares it again


async def test_a_custom_id_that_cannot_carry_the_marker_is_a_bad_line(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, _):
        too_long = "j" * 60
        items = [("job_0", chat_body(CLAUDE, "fine")), (too_long, chat_body(CLAUDE, "refused"))]
        with pytest.raises(ProviderError) as caught:
            await client.prepare(pairs(items), metadata={BATCH_KEY: "x"})
        assert (caught.value.classification, caught.value.custom_id) == (ErrorClass.BAD_LINE, too_long)
        assert not list((tmp_path / "staging").iterdir())  # nothing half-staged is left behind


@contextlib.asynccontextmanager
async def claude_env(tmp_path: Path, redis_url: str, **knobs: Any) -> AsyncIterator[DeferredEnv]:
    async with deferred_env(tmp_path, redis_url, simulator={**FAST, **knobs}, models=claude_models) as env:
        yield env


def anthropic_batches(env: DeferredEnv) -> list[dict[str, Any]]:
    response = httpx.get(
        env.simulator_url + "/v1/messages/batches", params={"limit": 100}, headers={"x-api-key": PROVIDER_KEY}
    )
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_worker_retries_the_expired_half_of_an_anthropic_batch(tmp_path: Path, redis_url: str) -> None:
    async with claude_env(tmp_path, redis_url, finish_fraction=0.5, expiry_s=1.5) as env:
        bodies = [chat_body(CLAUDE, f"q{i}") for i in range(20)]
        views = [await env.accept(body) for body in bodies]
        worker = asyncio.create_task(Worker(env.runtime, worker_id="w1").run(burst=True))
        await wait_until(lambda: anthropic_batches(env), timeout=20, what="the first batch created")
        env.configure_simulator(finish_fraction=1.0)
        await asyncio.wait_for(worker, 60)
        first, second = sorted(anthropic_batches(env), key=lambda batch: batch["created_at"])
        assert first["processing_status"] == "ended"
        assert first["request_counts"]["expired"] == 10
        assert first["request_counts"]["succeeded"] == 10
        assert second["request_counts"]["succeeded"] == 10  # only the expired half went again
        finished = await env.store.jobs.get_many([view.id for view in views])
        for body, view in zip(bodies, finished, strict=True):
            assert view is not None
            assert view.status == "completed"
            assert view.response is not None
            assert orjson.loads(view.response)["choices"][0]["message"]["content"] == expected_content(body)
        assert Counter(view.attempts for view in finished if view) == {0: 10, 1: 10}
