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
import yaml

from proxy.providers.anthropic_batch import AnthropicBatchClient
from proxy.providers.base import BatchInfo, BatchState, LineOutcome, ResultLine
from proxy.providers.openai_batch import BatchApiError
from proxy.runtime import build_runtime
from proxy.settings import Config, Settings
from proxy.simulator.engine import expected_content
from proxy.worker.runner import Worker
from tests.support.deferred_env import DeferredEnv, chat_body
from tests.support.stack import PROVIDER_KEY, config_document, simulator_server

CLAUDE = "claude-haiku-4-5-20251001"
FAST = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}
BATCH_KEY = "batchgate_batch"


def write_jsonl(path: Path, bodies: list[dict[str, Any]]) -> Path:
    with path.open("wb") as out:
        for index, body in enumerate(bodies):
            line = {"custom_id": f"job_{index}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            out.write(orjson.dumps(line) + b"\n")
    return path


@contextlib.asynccontextmanager
async def batch_client(tmp_path: Path, **knobs: Any) -> AsyncIterator[tuple[AnthropicBatchClient, str]]:
    with simulator_server(**{**FAST, **knobs}) as upstream:
        client = AnthropicBatchClient(
            base_url=upstream.url + "/v1", api_key=PROVIDER_KEY, timeout=10, staging_dir=tmp_path / "staging"
        )
        try:
            yield client, upstream.url
        finally:
            await client.aclose()


async def submit(client: AnthropicBatchClient, tmp_path: Path, count: int, name: str = "b1") -> BatchInfo:
    bodies = [chat_body(CLAUDE, f"{name} question {i}") for i in range(count)]
    file_id = await client.upload_file(write_jsonl(tmp_path / f"{name}.jsonl", bodies), filename=f"{name}.jsonl")
    return await client.create_batch(file_id, metadata={BATCH_KEY: name})


async def until_ended(client: AnthropicBatchClient, batch_id: str, within: float = 20) -> BatchInfo:
    end = time.monotonic() + within
    while time.monotonic() < end:
        info = await client.retrieve_batch(batch_id)
        if info.state.is_terminal:
            return info
        await asyncio.sleep(0.1)
    raise AssertionError("batch did not end in time")


async def lines_of(client: AnthropicBatchClient, info: BatchInfo) -> list[ResultLine]:
    return [line async for line in client.result_lines(info)]


async def test_a_batch_completes_with_openai_shaped_answers(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, _):
        created = await submit(client, tmp_path, 5)
        assert created.state is BatchState.IN_PROGRESS
        assert created.batch_id.startswith("msgbatch_")
        assert created.total == 5
        assert not list((tmp_path / "staging").glob("*.json"))  # the staged body is gone once sent
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
            assert line.body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


async def test_cancel_maps_to_cancelling_then_cancelled_lines(tmp_path: Path) -> None:
    async with batch_client(tmp_path, finish_fraction=0.0, cancel_delay_s=0.3) as (client, _):
        created = await submit(client, tmp_path, 4)
        cancelling = await client.cancel_batch(created.batch_id)
        assert cancelling.state is BatchState.CANCELLING
        info = await until_ended(client, created.batch_id)
        assert info.state is BatchState.CANCELLED
        lines = await lines_of(client, info)
        assert [line.outcome for line in lines] == [LineOutcome.CANCELLED] * 4
        assert all(line.transient and line.error_code == "batch_cancelled" for line in lines)


async def test_per_line_errors_keep_their_status_and_an_openai_error_body(tmp_path: Path) -> None:
    async with batch_client(tmp_path, line_400_rate=0.5, line_500_rate=0.5, seed=3) as (client, _):
        info = await until_ended(client, (await submit(client, tmp_path, 12)).batch_id)
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


async def test_a_crashed_submission_finds_its_batch_again(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, url):
        first = await submit(client, tmp_path, 3, name="first")
        again = AnthropicBatchClient(base_url=url, api_key=PROVIDER_KEY, timeout=10, staging_dir=tmp_path / "staging")
        elsewhere = AnthropicBatchClient(base_url=url, api_key=PROVIDER_KEY, staging_dir=tmp_path / "other-host")
        try:
            [found] = await again.find_batches(metadata_key=BATCH_KEY, metadata_value="first")
            assert found.batch_id == first.batch_id
            assert found.metadata == {BATCH_KEY: "first"}
            assert await elsewhere.find_batches(metadata_key=BATCH_KEY, metadata_value="first") == []
            # died while the create call was in flight: only the intent was journaled; the listing finds it
            entry = next((tmp_path / "staging" / "journal").glob("*.json"))
            for path in (tmp_path / "staging" / "journal").glob("*.json"):
                intent = orjson.loads(path.read_bytes())
                intent.pop("batch_id")
                path.write_bytes(orjson.dumps(intent))
            [recovered] = await again.find_batches(metadata_key=BATCH_KEY, metadata_value="first")
            assert recovered.batch_id == first.batch_id
            assert "batch_id" in orjson.loads(entry.read_bytes())
            assert await again.find_batches(metadata_key=BATCH_KEY, metadata_value="never-sent") == []
        finally:
            await again.aclose()
            await elsewhere.aclose()


async def test_an_unknown_staged_input_is_reported_as_gone(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, _):
        with pytest.raises(BatchApiError) as caught:
            await client.create_batch("staged-0123abcd", metadata={BATCH_KEY: "x"})
        assert caught.value.status == 404  # the submitter then builds and uploads the batch again


@contextlib.asynccontextmanager
async def claude_env(tmp_path: Path, redis_url: str, **knobs: Any) -> AsyncIterator[DeferredEnv]:
    with simulator_server(**{**FAST, **knobs}) as upstream:
        document = config_document(upstream.url)
        document["model_list"] = [
            {
                "model_name": CLAUDE,
                "litellm_params": {"model": f"anthropic/{CLAUDE}", "api_base": upstream.url, "api_key": PROVIDER_KEY},
            }
        ]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        runtime = build_runtime(Settings(config=path, redis_url=redis_url), Config.model_validate(document))
        try:
            yield DeferredEnv(runtime, runtime.store, upstream.url, path, redis_url)
        finally:
            await runtime.providers.aclose()
            await runtime.redis.aclose()


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
        for _ in range(400):
            if anthropic_batches(env):
                break
            await asyncio.sleep(0.05)
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
