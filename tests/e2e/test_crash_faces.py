"""Every provider face, a worker killed -9 at every stage of one batch: every job answered once, one batch created.

One batch is carried through the stages by a worker per stage (tests/support/crash.py): killed before its upload,
after it, before the create, after it, while polling and half-way through the ingest (the batch is one ingest
chunk and a few lines long, so the kill falls between chunks); each next worker takes over what the last one left.
A last worker runs to the end (in the test process). Then every job holds its own answer, the face holds one batch
of every line, and its ledger billed each line once. Bedrock's jobs live on the session's S3 server (moto).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.worker.ingest import CHUNK
from tests.support.crash import FAST_LEASES, kill_at_each_stage_then_recover
from tests.support.deferred_env import CLAUDE, GEMINI, assert_answered, chat_body, claude_models, deferred_env
from tests.support.deferred_env import gemini_models as gemini_face_models
from tests.support.deferred_env import vertex_models as vertex_face_models
from tests.support.gcs_server import vertex_storage
from tests.support.s3_server import BEDROCK_MODEL, S3Server, bedrock_models
from tests.support.stack import PROVIDER_KEY, config_document

JOBS = CHUNK + 5
AZURE_BATCH_DEPLOYMENT = "gpt-4o-mini-batch"
AZURE_VERSIONS = {"azure-v1": "v1", "azure-legacy": "2025-03-01-preview"}
GROQ_UPSTREAM = "groq/openai/gpt-oss-20b"


@dataclass(frozen=True)
class Face:
    model: str  # the configured model name
    litellm_model: str  # what the face bills it as
    models: Callable[[str], list[dict[str, Any]]]  # the model_list for a simulator URL
    simulator: dict[str, Any] = field(default_factory=dict)  # the simulator's knobs
    answered_model: str | None = None  # the model a line's answer is computed for, when not `model`
    # Anthropic and Gemini results go through litellm's translation, 500 lines at a time: on a loaded machine that
    # holds the worker's loop longer than the shortest lease
    lease: float = 1.5
    storage: bool = False  # its batches go through a GCS server (tests/support/gcs_server.py)


def one_model(model: str, litellm_model: str, root: str, **params: Any) -> Callable[[str], list[dict[str, Any]]]:
    """`model` as `litellm_model` at the simulator's `root` path."""

    def models(url: str) -> list[dict[str, Any]]:
        settings = {"model": litellm_model, "api_base": url + root, "api_key": PROVIDER_KEY, **params}
        return [{"model_name": model, "litellm_params": settings}]

    return models


def openai_models(url: str) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = config_document(url)["model_list"][:1]
    return models


def azure_face(style: str) -> Face:
    params = {"api_version": AZURE_VERSIONS[style], "batch_deployment": AZURE_BATCH_DEPLOYMENT}
    return Face(
        "gpt-4o-mini",
        "azure/gpt-4o-mini",
        one_model("gpt-4o-mini", "azure/gpt-4o-mini", "", **params),
        {"azure_deployments": {AZURE_BATCH_DEPLOYMENT: "gpt-4o-mini"}},
        answered_model=AZURE_BATCH_DEPLOYMENT,
    )


FACES = {
    "openai": Face("gpt-4o-mini", "gpt-4o-mini", openai_models),
    "anthropic": Face(CLAUDE, CLAUDE, claude_models, lease=5.0),
    "azure-v1": azure_face("azure-v1"),
    "azure-legacy": azure_face("azure-legacy"),
    "gemini": Face(GEMINI, f"gemini/{GEMINI}", gemini_face_models, lease=5.0),
    "mistral": Face(
        "mistral-small-latest", "mistral/mistral-small-latest",
        one_model("mistral-small-latest", "mistral/mistral-small-latest", "/mistral/v1"),
    ),
    "xai": Face(
        "grok-4.20-non-reasoning", "xai/grok-4.20-non-reasoning",
        one_model("grok-4.20-non-reasoning", "xai/grok-4.20-non-reasoning", "/xai/v1"),
    ),
    "groq": Face(
        "gpt-oss-20b", GROQ_UPSTREAM, one_model("gpt-oss-20b", GROQ_UPSTREAM, "/v1"), {"flavor": "groq"},
        answered_model=GROQ_UPSTREAM.removeprefix("groq/"),
    ),
    "vertex": Face(
        GEMINI, f"vertex_ai/{GEMINI}", vertex_face_models, {"api_key": PROVIDER_KEY}, lease=5.0, storage=True
    ),
}  # fmt: skip


def bedrock_face(request: pytest.FixtureRequest) -> Face:
    """Bedrock jobs on the session's S3 server (a bucket of their own), at Bedrock's own minimum of 100 records."""
    s3: S3Server = request.getfixturevalue("s3")
    models = bedrock_models(s3, request.getfixturevalue("monkeypatch"), s3.make_bucket())
    return Face(BEDROCK_MODEL, BEDROCK_MODEL, models, {"s3_endpoint_url": s3.url})


# faces whose batches live on an object store: their Face is made with the test's fixtures
STORED_FACES: dict[str, Callable[[pytest.FixtureRequest], Face]] = {"bedrock": bedrock_face}


def simulator_get(url: str, path: str) -> dict[str, Any]:
    """The simulator's ledger loads litellm's price map on first use: seconds, a minute on a loaded machine."""
    found: dict[str, Any] = httpx.get(url + path, timeout=120).raise_for_status().json()
    return found


# the timeout is a hang detector, not a speed limit: Vertex also runs its GCS server in this process, and on a
# loaded machine (load 7 on 2 cores) the case passed in 180 s
CASES = [
    pytest.param(name, marks=pytest.mark.timeout(300)) if name in FACES and FACES[name].storage else name
    for name in [*FACES, *STORED_FACES]
]


@pytest.mark.parametrize("name", CASES)
async def test_a_worker_killed_at_every_stage_answers_each_job_once_from_one_batch(
    tmp_path: Path, redis_url: str, name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    face = FACES[name] if name in FACES else STORED_FACES[name](request)
    leases = {"worker": {**FAST_LEASES["worker"], "lease": face.lease}}
    with vertex_storage(monkeypatch) if face.storage else contextlib.nullcontext({}) as storage:
        await crash_every_stage(tmp_path, redis_url, name, face, simulator={**face.simulator, **storage}, leases=leases)


async def crash_every_stage(
    tmp_path: Path, redis_url: str, name: str, face: Face, *, simulator: dict[str, Any], leases: dict[str, Any]
) -> None:
    async with deferred_env(tmp_path, redis_url, simulator=simulator, models=face.models, **leases) as env:
        bodies = [chat_body(face.model, f"{name} {i}") for i in range(JOBS)]
        views = [await env.accept(body) for body in bodies]
        await kill_at_each_stage_then_recover(env, tmp_path)
        answered = [{**body, "model": face.answered_model or face.model} for body in bodies]
        await assert_answered(env, answered, views)
        batches = simulator_get(env.simulator_url, "/_sim/batches")["batches"]
        assert [batch["lines"] for batch in batches] == [JOBS], "a batch was created twice"
        billed = simulator_get(env.simulator_url, "/_sim/ledger")["models"][face.litellm_model]
        assert (billed["sync"]["requests"], billed["batch"]["requests"]) == (0, JOBS), "a line ran twice"
