"""GeminiBatchClient against the simulator's Gemini face, directly and under the worker: inline and Files API
inputs, state mapping, per-line errors, cancel, expiry, the key's checks and finding a batch again after a crash."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.providers.base import (
    BatchInfo,
    BatchState,
    ErrorClass,
    LineOutcome,
    PreparedInput,
    ProviderError,
    ResultLine,
)
from proxy.providers.gemini_batch import GeminiBatchClient
from proxy.simulator.embeddings import embedding_answer, vector
from proxy.simulator.engine import expected_content
from proxy.worker.runner import Worker
from tests.support.batch_clients import lines_of, pairs, until_ended
from tests.support.deferred_env import GEMINI, chat_body, deferred_env, gemini_models
from tests.support.stack import PROVIDER_KEY, simulator_server
from tests.support.waiting import wait_until

FAST = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}
BATCH_KEY = "batchgate_batch"


def gemini_client(
    url: str, staging: Path, *, key: str = PROVIDER_KEY, inline_max: int | None = None
) -> GeminiBatchClient:
    limits = {} if inline_max is None else {"inline_max_bytes": inline_max}
    return GeminiBatchClient(
        base_url=url + "/v1beta", api_key=key, upstream_model=GEMINI, timeout=10, staging_dir=staging, **limits
    )


@contextlib.asynccontextmanager
async def batch_client(
    tmp_path: Path, *, inline_max: int | None = None, **knobs: Any
) -> AsyncIterator[tuple[GeminiBatchClient, str]]:
    with simulator_server(**{**FAST, "api_key": PROVIDER_KEY, **knobs}) as upstream:
        client = gemini_client(upstream.url, tmp_path / "staging", inline_max=inline_max)
        try:
            yield client, upstream.url
        finally:
            await client.aclose()


def question(name: str, index: int) -> dict[str, Any]:
    return chat_body(GEMINI, f"{name} question {index}")


async def prepare(client: GeminiBatchClient, count: int, name: str = "b1") -> PreparedInput:
    bodies = [(f"job_{i}", question(name, i)) for i in range(count)]
    return await client.prepare(pairs(bodies), metadata={BATCH_KEY: name})


async def submit(client: GeminiBatchClient, count: int, name: str = "b1") -> BatchInfo:
    prepared = await prepare(client, count, name)
    assert prepared.requests == count
    return await client.create(prepared.ref, metadata={BATCH_KEY: name})


def assert_answers(lines: list[ResultLine], name: str, count: int) -> None:
    assert sorted(line.custom_id for line in lines) == sorted(f"job_{i}" for i in range(count))
    for line in lines:
        assert line.outcome is LineOutcome.SUCCEEDED
        assert line.body is not None
        assert line.body["object"] == "chat.completion"
        content = line.body["choices"][0]["message"]["content"]
        assert content == expected_content(question(name, int(line.custom_id.removeprefix("job_"))))
        assert line.body["usage"]["total_tokens"] > line.body["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("path", ["inline", "file"])
async def test_a_batch_completes_with_openai_shaped_answers(tmp_path: Path, path: str) -> None:
    """Below the inline limit the requests go in the create call; above it, through a resumable upload."""
    async with batch_client(tmp_path, inline_max=None if path == "inline" else 256) as (client, url):
        prepared = await prepare(client, 8)
        assert prepared.ref.startswith("staged-" if path == "inline" else "uploaded-8-files/")
        created = await client.create(prepared.ref, metadata={BATCH_KEY: "b1"})
        assert created.batch_id.startswith("batches/")
        assert (created.state, created.total) == (BatchState.VALIDATING, 8)
        assert not list((tmp_path / "staging").iterdir())  # nothing staged is left once sent
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed, info.failed) == (BatchState.COMPLETED, 8, 0)
        assert info.output_file_id is not None
        assert info.output_file_id.startswith("batches/" if path == "inline" else "files/")
        assert_answers(await lines_of(client, info), "b1", 8)
        await client.cleanup(prepared.ref)
        if path == "file":  # the uploaded input is deleted upstream
            name = prepared.ref.split("-", 2)[2]
            async with httpx.AsyncClient() as http:
                gone = await http.get(f"{url}/v1beta/{name}", headers={"x-goog-api-key": PROVIDER_KEY})
            assert gone.status_code == 404
        await client.cleanup(prepared.ref)  # missing is fine


async def test_an_inline_call_the_provider_finds_too_large_goes_as_a_file(tmp_path: Path) -> None:
    """The face refuses an inline call over its limit (400, as the API does); the adapter then sends the same
    input through the Files API, and deletes that file when the input is cleaned up."""
    too_large = {"contents": [{"parts": [{"text": "y" * 300}]}]}
    inline = {"batch": {"displayName": "x", "inputConfig": {"requests": {"requests": [{"request": too_large}]}}}}
    async with (
        batch_client(tmp_path, gemini_inline_max_bytes=256) as (client, url),
        httpx.AsyncClient(base_url=url, headers={"x-goog-api-key": PROVIDER_KEY}) as http,
    ):
        refused = await http.post(f"/v1beta/models/{GEMINI}:batchGenerateContent", json=inline)
        assert refused.status_code == 400
        assert "payload size exceeds the limit" in refused.json()["error"]["message"]
        prepared = await prepare(client, 8)
        assert prepared.ref.startswith("staged-")
        created = await client.create(prepared.ref, metadata={BATCH_KEY: "b1"})
        info = await until_ended(client, created.batch_id)
        assert info.output_file_id is not None
        assert info.output_file_id.startswith("files/")
        assert_answers(await lines_of(client, info), "b1", 8)

        async def input_files() -> list[dict[str, Any]]:
            listed: list[dict[str, Any]] = (await http.get("/v1beta/files")).json()["files"]
            return [found for found in listed if "responses" not in found["displayName"]]

        assert len(await input_files()) == 1
        await client.cleanup(prepared.ref)
        assert await input_files() == []


async def test_per_line_errors_keep_their_status_and_an_openai_error_body(tmp_path: Path) -> None:
    async with batch_client(tmp_path, line_400_rate=0.3, line_429_rate=0.3, seed=5) as (client, _):
        info = await until_ended(client, (await submit(client, 20)).batch_id)
        lines = await lines_of(client, info)
        assert len(lines) == 20
        statuses = Counter(line.status_code for line in lines)
        assert set(statuses) == {200, 400, 429}
        assert info.failed == statuses[400] + statuses[429]
        assert info.completed == statuses[200]
        for line in lines:
            if line.status_code == 200:
                continue
            assert line.outcome is LineOutcome.ERRORED
            assert line.body is not None
            expected_type = "invalid_request_error" if line.status_code == 400 else "rate_limit_error"
            assert line.body["error"]["type"] == expected_type
            assert line.error_code == ("INVALID_ARGUMENT" if line.status_code == 400 else "RESOURCE_EXHAUSTED")
            assert line.transient is (line.status_code == 429)


async def test_an_invalid_request_fails_its_own_line(tmp_path: Path) -> None:
    """A request litellm translates but the API refuses (here: an unknown field, sent through extra params)."""
    async with batch_client(tmp_path) as (_, url):
        strict = GeminiBatchClient(
            base_url=url + "/v1beta", api_key=PROVIDER_KEY, upstream_model=GEMINI, staging_dir=tmp_path / "s2",
            extra_params={"extra_body": {"notAField": 1}},
        )  # fmt: skip
        try:
            created = await submit(strict, 2)
            info = await until_ended(strict, created.batch_id)
            lines = await lines_of(strict, info)
        finally:
            await strict.aclose()
        assert [line.status_code for line in lines] == [400, 400]
        assert all("Unknown name" in (line.error_message or "") for line in lines)


async def test_cancel_ends_the_batch_with_only_finished_lines_answered(tmp_path: Path) -> None:
    async with batch_client(tmp_path, finish_fraction=0.5, turnaround_s=1.0, cancel_delay_s=0.3) as (client, _):
        created = await submit(client, 6)

        async def half_done() -> BatchInfo | None:
            info = await client.retrieve(created.batch_id)
            return info if info.completed == 3 else None

        await wait_until(half_done, timeout=20, what="half the lines finished")
        running = await client.cancel(created.batch_id)
        assert running.state is BatchState.IN_PROGRESS  # Gemini has no `cancelling` state
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed, info.total) == (BatchState.CANCELLED, 3, 6)
        lines = await lines_of(client, info)
        assert len(lines) == 3
        assert all(line.outcome is LineOutcome.SUCCEEDED for line in lines)
        with pytest.raises(ProviderError) as caught:
            await client.cancel(created.batch_id)
        assert caught.value.status == 400


async def test_an_expired_batch_answers_what_finished(tmp_path: Path) -> None:
    async with batch_client(tmp_path, finish_fraction=0.5, expiry_s=1.5) as (client, _):
        info = await until_ended(client, (await submit(client, 10)).batch_id)
        assert (info.state, info.completed) == (BatchState.EXPIRED, 5)
        lines = await lines_of(client, info)
        assert len(lines) == 5


async def test_the_key_is_checked_and_a_bad_one_is_an_account_problem(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (_, url):
        for key, status in (("wrong-key", 400), ("", 403)):
            other = gemini_client(url, tmp_path / "other", key=key)
            try:
                with pytest.raises(ProviderError) as caught:
                    await other.retrieve("batches/gembatch-000")
            finally:
                await other.aclose()
            assert caught.value.status == status
            assert caught.value.classification is ErrorClass.ACCOUNT_PROBLEM
        async with httpx.AsyncClient() as http:
            by_query = await http.get(f"{url}/v1beta/batches", params={"key": PROVIDER_KEY})
        assert by_query.status_code == 200


async def test_a_provider_echoing_the_key_never_gets_it_into_an_error(tmp_path: Path) -> None:
    async with batch_client(tmp_path, echo_credentials_in_errors=True) as (client, _):
        with pytest.raises(ProviderError) as caught:
            await client.retrieve("batches/gembatch-unknown")
        assert caught.value.status == 404
        assert "credential received" in caught.value.message  # the face did echo it
        assert PROVIDER_KEY not in str(caught.value)


async def test_a_crashed_submission_finds_its_batch_again_on_any_host(tmp_path: Path) -> None:
    """Another host (its own staging directory, no shared state) finds the batch by its display name."""
    async with batch_client(tmp_path, turnaround_s=60.0, finish_fraction=0.0) as (client, url):
        since = time.time()
        first_input = await prepare(client, 3, "first")
        first = await client.create(first_input.ref, metadata={BATCH_KEY: "first"})
        second = await submit(client, 3, "second")
        elsewhere = gemini_client(url, tmp_path / "other-host")
        try:
            [found] = await elsewhere.find_batches({BATCH_KEY: "first"}, since=since, prepared=first_input.ref)
            assert (found.batch_id, found.metadata) == (first.batch_id, {BATCH_KEY: "first"})
            [other] = await elsewhere.find_batches({BATCH_KEY: "second"}, since=since, prepared="")
            assert other.batch_id == second.batch_id
            later = time.time() + 120
            assert await elsewhere.find_batches({BATCH_KEY: "first"}, since=later, prepared=first_input.ref) == []
            assert await elsewhere.find_batches({BATCH_KEY: "never-sent"}, since=since, prepared="") == []
            with pytest.raises(ProviderError) as caught:  # an inline input staged on the first host
                await elsewhere.create(first_input.ref, metadata={BATCH_KEY: "first"})
            assert caught.value.classification is ErrorClass.NOT_FOUND
        finally:
            await elsewhere.aclose()


async def test_worker_retries_the_expired_half_of_a_gemini_batch(tmp_path: Path, redis_url: str) -> None:
    knobs = {**FAST, "finish_fraction": 0.5, "expiry_s": 1.5}
    async with deferred_env(tmp_path, redis_url, simulator=knobs, models=gemini_models) as env:
        bodies = [chat_body(GEMINI, f"q{i}") for i in range(20)]
        views = [await env.accept(body) for body in bodies]
        worker = asyncio.create_task(Worker(env.runtime, worker_id="w1").run(burst=True))
        await wait_until(lambda: gemini_batches(env.simulator_url), timeout=30, what="the first batch created")
        env.configure_simulator(finish_fraction=1.0)
        await asyncio.wait_for(worker, 90)
        second, first = gemini_batches(env.simulator_url)  # newest first
        assert first["metadata"]["state"] == "BATCH_STATE_EXPIRED"
        assert first["metadata"]["batchStats"]["successfulRequestCount"] == "10"
        assert second["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
        assert second["metadata"]["batchStats"]["requestCount"] == "10"  # only the expired half went again
        finished = await env.store.jobs.get_many([view.id for view in views])
        for body, view in zip(bodies, finished, strict=True):
            assert view is not None
            assert view.status == "completed"
            assert view.response is not None
            assert orjson.loads(view.response)["choices"][0]["message"]["content"] == expected_content(body)
        assert Counter(view.attempts for view in finished if view) == {0: 10, 1: 10}


def gemini_batches(simulator_url: str) -> list[dict[str, Any]]:
    response = httpx.get(
        simulator_url + "/v1beta/batches", params={"pageSize": 100}, headers={"x-goog-api-key": PROVIDER_KEY}
    )
    operations: list[dict[str, Any]] = response.json()["operations"]
    return operations


async def test_worker_fails_the_job_of_a_refused_line_with_its_error(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url, simulator={**FAST, "line_400_rate": 1.0}, models=gemini_models) as env:
        refused = await env.accept(chat_body(GEMINI, "this line is refused"))
        await asyncio.wait_for(Worker(env.runtime, worker_id="w1").run(burst=True), 90)
        [view] = await env.store.jobs.get_many([refused.id])
        assert view is not None
        assert (view.status, view.attempts) == ("failed", 0)
        assert view.error is not None
        assert (view.error["type"], view.error["code"]) == ("invalid_request_error", "INVALID_ARGUMENT")
        [operation] = gemini_batches(env.simulator_url)
        assert operation["metadata"]["batchStats"]["failedRequestCount"] == "1"


# embeddings: asyncBatchEmbedContent, one request per input, joined back into one answer per job

EMBEDDER = "gemini-embedding-001"


@pytest.mark.parametrize("path", ["inline", "file"])
async def test_an_embeddings_batch_answers_each_job_one_create_embedding_response(tmp_path: Path, path: str) -> None:
    with simulator_server(**{**FAST, "api_key": PROVIDER_KEY}) as upstream:
        client = GeminiBatchClient(
            base_url=upstream.url + "/v1beta",
            api_key=PROVIDER_KEY,
            upstream_model=EMBEDDER,
            timeout=10,
            staging_dir=tmp_path / "staging",
            embeddings=True,
            **({} if path == "inline" else {"inline_max_bytes": 256}),
        )
        bodies = {
            "job_0": {"model": "e", "input": ["alpha", "beta", "gamma"], "dimensions": 8, "encoding_format": "float"},
            "job_1": {"model": "e", "input": "delta", "dimensions": 8, "encoding_format": "base64"},
            "job_2": {"model": "e", "input": ["x" * 9], "dimensions": 99999},  # the provider refuses it
        }
        try:
            prepared = await client.prepare(pairs(list(bodies.items())), metadata={BATCH_KEY: "e1"})
            assert prepared.requests == 3  # jobs, though their 5 inputs went as 5 requests
            created = await client.create(prepared.ref, metadata={BATCH_KEY: "e1"})
            assert created.total == 5
            info = await until_ended(client, created.batch_id)
            lines = {line.custom_id: line for line in await lines_of(client, info)}
        finally:
            await client.aclose()
    assert set(lines) == set(bodies)
    first, second, refused = lines["job_0"], lines["job_1"], lines["job_2"]
    assert first.outcome is LineOutcome.SUCCEEDED
    assert first.body is not None
    assert [item["index"] for item in first.body["data"]] == [0, 1, 2]
    for item, text in zip(first.body["data"], ["alpha", "beta", "gamma"], strict=True):
        assert item["embedding"] == simulated_vector(text)
    assert first.body["usage"] == {"prompt_tokens": 2 + 1 + 2, "total_tokens": 5}  # ceil(bytes / 4) each
    assert second.body is not None
    packed = base64.b64decode(second.body["data"][0]["embedding"])
    assert list(struct.unpack("<8f", packed)) == pytest.approx(simulated_vector("delta"), rel=1e-6)
    assert (refused.outcome, refused.status_code) == (LineOutcome.ERRORED, 400)


def simulated_vector(text: str) -> list[float]:
    answer = embedding_answer({"model": EMBEDDER, "input": text, "dimensions": 8})
    assert answer.embedding is not None
    return vector(answer.embedding.digests[0], 8)
