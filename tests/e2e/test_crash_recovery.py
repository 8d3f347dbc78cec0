"""kill -9 of a worker process at each stage of a batch, then a restart: every job answered once, no batch twice.

The worker runs as `python -m proxy worker --burst` (tests/support/crash.py); every face is killed at every stage
in tests/e2e/test_crash_faces.py; this file keeps OpenAI's stages with their own batch sizes, recovery on another
host, and the embeddings queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.endpoints import Endpoint, queue_group
from proxy.jobs.service import accept
from proxy.policy.decision import Decision
from proxy.simulator.embeddings import embedding_answer, vector
from tests.support.crash import FAST_LEASES, kill_at_then_recover
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
from tests.support.gcs_server import object_names, vertex_storage
from tests.support.stack import PROVIDER_KEY


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
    with vertex_storage(monkeypatch) as storage:
        simulator = {"api_key": PROVIDER_KEY, **storage}
        async with deferred_env(tmp_path, redis_url, simulator=simulator, models=vertex_models, **FAST_LEASES) as env:
            bodies = [chat_body(GEMINI, f"after_create {i}") for i in range(30)]
            views = [await env.accept(body) for body in bodies]
            await kill_at_then_recover(env, tmp_path, "after_create", hosts=(tmp_path / "host-a", tmp_path / "host-b"))
            await assert_answered(env, bodies, views)
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {PROVIDER_KEY}"}) as http:
                url = env.simulator_url + "/v1/projects/proj-1/locations/us-central1/batchPredictionJobs"
                [job] = (await http.get(url)).json()["batchPredictionJobs"]  # created once
            assert job["completionStats"]["successfulCount"] == str(len(bodies))
            assert object_names(storage["gcs_url"], VERTEX_BUCKET) == []


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
