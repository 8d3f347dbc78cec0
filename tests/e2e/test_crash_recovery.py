"""kill -9 of a worker process at each stage of a batch, then a restart: every job answered once, no batch twice.

The worker runs as `python -m proxy worker --burst`; the fault-injection point BATCHGATE_TEST_PAUSE_AT makes it
stop at a named stage (and write the stage to BATCHGATE_TEST_PAUSE_MARKER) so the test kills it exactly there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.endpoints import Endpoint, queue_group
from proxy.jobs.service import accept
from proxy.policy.decision import Decision
from proxy.simulator.embeddings import embedding_answer, vector
from tests.support.deferred_env import (
    ALICE,
    CLAUDE,
    GEMINI,
    VERTEX_BUCKET,
    DeferredEnv,
    assert_answered,
    chat_body,
    claude_models,
    deferred_env,
    gemini_models,
    vertex_models,
)
from tests.support.gcs_server import gcs_server, object_names
from tests.support.servers import child_environment
from tests.support.stack import PROVIDER_KEY

FAST_LEASES = {"worker": {"lease": 1.5, "tick": 0.1, "poll_interval_min": 0.2, "poll_interval_max": 0.5,
                          "safety_margin": 2}}  # fmt: skip


def start_worker(
    env: DeferredEnv, *, pause_at: str | None = None, marker: Path | None = None, host_dir: Path | None = None
) -> subprocess.Popen[bytes]:
    """`host_dir`: the worker's temporary directory, so two workers can stand for two hosts."""
    environment = child_environment()
    environment.pop("BATCHGATE_TEST_PAUSE_AT", None)
    if host_dir is not None:
        host_dir.mkdir(parents=True, exist_ok=True)
        environment["TMPDIR"] = str(host_dir)
    if pause_at is not None and marker is not None:
        environment["BATCHGATE_TEST_PAUSE_AT"] = pause_at
        environment["BATCHGATE_TEST_PAUSE_MARKER"] = str(marker)
    command = [sys.executable, "-m", "proxy", "worker", "--burst", "--config", str(env.config_path),
               "--redis-url", env.redis_url]  # fmt: skip
    return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_for_marker(marker: Path, process: subprocess.Popen[bytes], within: float = 150) -> None:
    """`within` is a hang detector, not a speed limit: a worker importing litellm on a loaded machine takes a minute."""
    end = time.monotonic() + within
    while not await asyncio.to_thread(marker.exists):
        if process.poll() is not None:
            raise AssertionError(f"worker exited before pausing: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        if time.monotonic() > end:
            raise AssertionError("worker never reached the pause point")
        await asyncio.sleep(0.05)


async def wait_for_exit(process: subprocess.Popen[bytes], within: float = 60) -> None:
    end = time.monotonic() + within
    while process.poll() is None:
        if time.monotonic() > end:
            process.kill()
            raise AssertionError(f"worker did not finish: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
    assert process.returncode == 0, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]


async def kill_at_then_recover(
    env: DeferredEnv, tmp_path: Path, stage: str, *, hosts: tuple[Path | None, Path | None] = (None, None)
) -> None:
    """A worker killed -9 at `stage`, then a second one run to the end (each on its own host when given)."""
    marker = tmp_path / "paused"
    first = start_worker(env, pause_at=stage, marker=marker, host_dir=hosts[0])
    try:
        await wait_for_marker(marker, first)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        first.stderr.close()  # type: ignore[union-attr]
    second = start_worker(env, host_dir=hosts[1])
    try:
        await wait_for_exit(second)
    finally:
        second.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("stage", "jobs"),
    [
        ("before_upload", 30),
        ("after_upload", 30),
        ("after_create", 30),
        ("while_polling", 30),
        ("during_ingest", 700),
    ],
)
async def test_a_killed_worker_loses_nothing_and_submits_nothing_twice(
    tmp_path: Path, redis_url: str, stage: str, jobs: int
) -> None:
    async with deferred_env(tmp_path, redis_url, **FAST_LEASES) as env:
        bodies = [chat_body("gpt-4o-mini", f"{stage} {i}") for i in range(jobs)]
        views = [await env.accept(body) for body in bodies]
        await kill_at_then_recover(env, tmp_path, stage)
        await assert_answered(env, bodies, views)
        batches = env.provider_batches()
        ours = [batch["metadata"]["batchgate_batch"] for batch in batches]
        assert len(set(ours)) == len(ours), "a batch was created twice"
        assert sum(batch["request_counts"]["total"] for batch in batches) == jobs, "a job was sent twice"


def message_batches(env: DeferredEnv) -> list[dict[str, Any]]:
    response = httpx.get(
        env.simulator_url + "/v1/messages/batches", params={"limit": 100}, headers={"x-api-key": PROVIDER_KEY}
    )
    data: list[dict[str, Any]] = response.json()["data"]
    return data


@pytest.mark.parametrize("stage", ["after_upload", "after_create"])
async def test_an_anthropic_submission_is_recovered_on_another_host(tmp_path: Path, redis_url: str, stage: str) -> None:
    """The second worker shares nothing with the first but Redis and the provider: a staged body left on the first
    host is prepared again; a batch created there is found upstream by the marker in its custom_ids."""
    async with deferred_env(tmp_path, redis_url, models=claude_models, **FAST_LEASES) as env:
        bodies = [chat_body(CLAUDE, f"{stage} {i}") for i in range(30)]
        views = [await env.accept(body) for body in bodies]
        await kill_at_then_recover(env, tmp_path, stage, hosts=(tmp_path / "host-a", tmp_path / "host-b"))
        await assert_answered(env, bodies, views)
        [batch] = message_batches(env)  # created once, whichever host created it
        assert batch["request_counts"]["succeeded"] == len(bodies)
        assert not list((tmp_path / "host-b" / "batchgate-anthropic").glob("*.json"))


FACES = {  # provider -> (model, simulator face, the face's batch listing, (items key, its line count))
    "mistral": ("mistral-small-latest", "/mistral/v1", "/batch/jobs", ("data", "total_requests")),
    "xai": ("grok-4.20-non-reasoning", "/xai/v1", "/batches", ("batches", "state.num_requests")),
}


def face_batches(env: DeferredEnv, provider: str) -> list[int]:
    """The line count of every batch the provider's face holds."""
    _, face, listing, (items, count) = FACES[provider]
    page = httpx.get(env.simulator_url + face + listing, headers={"authorization": f"Bearer {PROVIDER_KEY}"}).json()
    counts = []
    for batch in page[items]:
        value = batch
        for key in count.split("."):
            value = value[key]
        counts.append(value)
    return counts


@pytest.mark.parametrize("provider", sorted(FACES))
async def test_a_mistral_or_xai_batch_created_before_the_kill_is_found_not_sent_again(
    tmp_path: Path, redis_url: str, provider: str
) -> None:
    model, face = FACES[provider][:2]

    def models(url: str) -> list[dict[str, Any]]:
        params = {"model": f"{provider}/{model}", "api_base": url + face, "api_key": PROVIDER_KEY}
        return [{"model_name": model, "litellm_params": params}]

    async with deferred_env(tmp_path, redis_url, models=models, **FAST_LEASES) as env:
        bodies = [chat_body(model, f"{provider} {i}") for i in range(30)]
        views = [await env.accept(body) for body in bodies]
        await kill_at_then_recover(env, tmp_path, "after_create")
        await assert_answered(env, bodies, views)
        assert face_batches(env, provider) == [len(bodies)]  # created once, found again by its label


AZURE_BATCH_DEPLOYMENT = "gpt-4o-mini-batch"


def azure_models(simulator_url: str) -> list[dict[str, Any]]:
    """gpt-4o-mini on the simulator's Azure face (v1 endpoint), batched on a Global-Batch deployment."""
    params = {"model": "azure/gpt-4o-mini", "api_base": simulator_url, "api_key": PROVIDER_KEY, "api_version": "v1",
              "batch_deployment": AZURE_BATCH_DEPLOYMENT}  # fmt: skip
    return [{"model_name": "gpt-4o-mini", "litellm_params": params}]


def azure_batches(env: DeferredEnv) -> list[dict[str, Any]]:
    response = httpx.get(
        env.simulator_url + "/openai/v1/batches", params={"limit": 100}, headers={"authorization": "Bearer sk-x"}
    )
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def env_ledger(env: DeferredEnv) -> dict[str, Any]:
    ledger: dict[str, Any] = httpx.get(env.simulator_url + "/_sim/ledger").json()
    return ledger


@pytest.mark.parametrize("stage", ["after_create"])  # the OpenAI adapter's, whose after_upload is tested above
async def test_an_azure_submission_is_recovered_once(tmp_path: Path, redis_url: str, stage: str) -> None:
    """Azure lists its batches with ISO timestamps and null counts: the restarted worker still finds the batch the
    killed one created (by its metadata and input file), and no line runs twice."""
    simulator = {"azure_deployments": {AZURE_BATCH_DEPLOYMENT: "gpt-4o-mini"}}
    async with deferred_env(tmp_path, redis_url, simulator=simulator, models=azure_models, **FAST_LEASES) as env:
        bodies = [chat_body("gpt-4o-mini", f"azure {stage} {i}") for i in range(30)]
        views = [await env.accept(body) for body in bodies]
        await kill_at_then_recover(env, tmp_path, stage)
        await assert_answered(env, [{**body, "model": AZURE_BATCH_DEPLOYMENT} for body in bodies], views)
        listed = azure_batches(env)
        ours = [batch["metadata"]["batchgate_batch"] for batch in listed]
        assert len(set(ours)) == len(ours), "a batch was created twice"
        billed = env_ledger(env)["models"]["azure/gpt-4o-mini"]["batch"]
        assert billed["requests"] == len(bodies), "a job was sent twice"


@pytest.mark.parametrize("stage", ["after_create"])  # where finding its batch by display name matters
async def test_a_gemini_submission_is_recovered_on_another_host(tmp_path: Path, redis_url: str, stage: str) -> None:
    """An inline input staged on the first host is prepared again; a batch created there is found upstream by
    its display name."""
    async with deferred_env(tmp_path, redis_url, models=gemini_models, **FAST_LEASES) as env:
        bodies = [chat_body(GEMINI, f"{stage} {i}") for i in range(30)]
        views = [await env.accept(body) for body in bodies]
        await kill_at_then_recover(env, tmp_path, stage, hosts=(tmp_path / "host-a", tmp_path / "host-b"))
        await assert_answered(env, bodies, views)
        async with httpx.AsyncClient(headers={"x-goog-api-key": PROVIDER_KEY}) as http:
            response = await http.get(env.simulator_url + "/v1beta/batches", params={"pageSize": 100})
        [batch] = response.json()["operations"]  # created once, whichever host created it
        assert batch["metadata"]["batchStats"]["successfulRequestCount"] == str(len(bodies))
        assert not list((tmp_path / "host-b" / "batchgate-gemini").glob("*.jsonl"))


async def test_a_vertex_submission_is_recovered_once(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the job was created: the next worker, on another host, finds it by its display name, creates
    none again, and the job's objects (uploaded input, written output) are deleted once it has been read."""
    with gcs_server(VERTEX_BUCKET) as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs)
        simulator = {"api_key": PROVIDER_KEY, "gcs_url": gcs}
        async with deferred_env(tmp_path, redis_url, simulator=simulator, models=vertex_models, **FAST_LEASES) as env:
            bodies = [chat_body(GEMINI, f"after_create {i}") for i in range(30)]
            views = [await env.accept(body) for body in bodies]
            await kill_at_then_recover(env, tmp_path, "after_create", hosts=(tmp_path / "host-a", tmp_path / "host-b"))
            await assert_answered(env, bodies, views)
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {PROVIDER_KEY}"}) as http:
                url = env.simulator_url + "/v1/projects/proj-1/locations/us-central1/batchPredictionJobs"
                [job] = (await http.get(url)).json()["batchPredictionJobs"]  # created once
            assert job["completionStats"]["successfulCount"] == str(len(bodies))
            assert object_names(gcs, VERTEX_BUCKET) == []


def embedding_models(simulator_url: str) -> list[dict[str, Any]]:
    return [
        {"model_name": EMBEDDER, "litellm_params": {"model": f"openai/{EMBEDDER}", "api_base": simulator_url + "/v1",
                                                     "api_key": PROVIDER_KEY}},
    ]  # fmt: skip


EMBEDDER = "text-embedding-3-small"


async def test_a_killed_worker_loses_no_embeddings_batch(tmp_path: Path, redis_url: str) -> None:
    """An embeddings batch (its own queue, batch endpoint /v1/embeddings) killed after its upload: each job answered
    once with its own vectors, the batch created once."""
    async with deferred_env(tmp_path, redis_url, models=embedding_models, **FAST_LEASES) as env:
        bodies = [{"model": EMBEDDER, "input": [f"text {i}", f"more {i}"], "dimensions": 4} for i in range(12)]
        decision = Decision(deferred=True, lane="batch", rule="test", reason="test")
        views = [
            await accept(
                env.store, env.runtime.config, ALICE, body, decision, group=queue_group(EMBEDDER, Endpoint.EMBEDDINGS)
            )
            for body in bodies
        ]
        await kill_at_then_recover(env, tmp_path, "after_upload")
        finished = await env.store.jobs.get_many([view.id for view in views])
        for body, view in zip(bodies, finished, strict=True):
            assert view is not None, view
            assert view.status == "completed", view
            assert view.response is not None
            answer = orjson.loads(view.response)
            assert answer["usage"]["prompt_tokens"] == embedding_answer(body).prompt_tokens
            spec = embedding_answer(body).embedding
            assert spec is not None
            assert [item["embedding"] for item in answer["data"]] == [vector(d, 4) for d in spec.digests]
        batches = env.provider_batches()
        assert len(batches) == 1
        assert batches[0]["endpoint"] == "/v1/embeddings"
        assert batches[0]["request_counts"]["total"] == len(bodies)
