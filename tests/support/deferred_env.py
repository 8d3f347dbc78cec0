"""Deferred-job test helpers: a Runtime on the simulated upstream, jobs accepted through the store, checks upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from proxy.auth import Caller
from proxy.jobs.service import accept
from proxy.policy.decide import choose_lane, sync_reason
from proxy.policy.decision import Decision, ResolvedLane
from proxy.policy.lanes import lane_facts
from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Config, Settings
from proxy.simulator.engine import expected_content
from proxy.store.records import JobView
from proxy.store.store import Store
from tests.support.stack import PROVIDER_KEY, config_document, simulator_server

ALICE = Caller("alice-key", "alpha")


@dataclass
class DeferredEnv:
    runtime: Runtime
    store: Store
    simulator_url: str
    config_path: Path
    redis_url: str

    def configure_simulator(self, **knobs: Any) -> None:
        httpx.patch(self.simulator_url + "/_sim/config", json=knobs, timeout=10).raise_for_status()

    def provider_batches(self) -> list[dict[str, Any]]:
        """Every batch the simulated upstream has (newest first)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = httpx.get(
                self.simulator_url + "/v1/batches", params=params, headers={"authorization": "Bearer sk-x"}, timeout=10
            ).json()
            found.extend(page["data"])
            if not page["has_more"]:
                return found
            params["after"] = page["data"][-1]["id"]

    async def accept(
        self,
        body: dict[str, Any],
        *,
        lane: ResolvedLane = "batch",
        deadline_in: float | None = None,
        caller: Caller = ALICE,
        idempotency_key: str | None = None,
    ) -> JobView:
        """Accept a job as the chat route does: with a deadline, the policy's choose_lane settles the lane (at the
        learned turnaround, once learned)."""
        config = self.runtime.config
        turnarounds = self.runtime.turnarounds
        assert turnarounds is not None
        await turnarounds.fresh(str(body["model"]))
        deadline, reason, rescue_reason = None, "test", None
        if deadline_in is not None:
            deadline = datetime.now(UTC) + timedelta(seconds=deadline_in)
            lanes = lane_facts(config, str(body["model"]), batch_turnaround=turnarounds.need(str(body["model"])))
            lane, reason = choose_lane(lane, deadline_in, lanes)
            rescue_reason = sync_reason(lane, lanes)
        decision = Decision(
            deferred=True, lane=lane, rule="test", reason=reason, deadline=deadline, rescue_reason=rescue_reason
        )
        return await accept(
            self.store,
            config,
            caller,
            body,
            decision,
            idempotency_key=idempotency_key,
            events=self.runtime.events,
            turnarounds=turnarounds,
        )


async def assert_answered(env: DeferredEnv, bodies: list[dict[str, Any]], views: list[JobView]) -> list[JobView]:
    """Every job completed with the simulator's answer to its body; the jobs as stored."""
    found = await env.store.jobs.get_many([view.id for view in views])
    finished = [view for view in found if view is not None]
    assert len(finished) == len(views)
    for body, view in zip(bodies, finished, strict=True):
        assert view.status == "completed", view
        assert view.response is not None
        assert orjson.loads(view.response)["choices"][0]["message"]["content"] == expected_content(body)
    return finished


def chat_body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def write_config(tmp_path: Path, simulator_url: str, **sections: Any) -> tuple[Path, Config]:
    path = tmp_path / "config.yaml"
    document = config_document(simulator_url, **sections)
    path.write_text(yaml.safe_dump(document))
    return path, Config.model_validate(document)


@contextlib.asynccontextmanager
async def deferred_env(
    tmp_path: Path,
    redis_url: str,
    *,
    simulator: dict[str, Any] | None = None,
    models: Callable[[str], list[dict[str, Any]]] | None = None,
    **sections: Any,
) -> AsyncIterator[DeferredEnv]:
    """`models`: the model_list for a simulator URL (the stack's OpenAI-shaped models when None)."""
    knobs = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1, **(simulator or {})}
    with simulator_server(**knobs) as upstream:
        if models is not None:
            sections["model_list"] = models(upstream.url)
        async with env_on(tmp_path, redis_url, upstream.url, **sections) as env:
            yield env


@contextlib.asynccontextmanager
async def env_on(tmp_path: Path, redis_url: str, simulator_url: str, **sections: Any) -> AsyncIterator[DeferredEnv]:
    """A Runtime on a simulated upstream that is already running (sections may point models elsewhere)."""
    path, config = write_config(tmp_path, simulator_url, **sections)
    runtime = build_runtime(Settings(config=path, redis_url=redis_url), config)
    try:
        yield DeferredEnv(runtime, runtime.store, simulator_url, path, redis_url)
    finally:
        await close_runtime(runtime)  # as the app does: the ledger writer first, so none of it outlives Redis


CLAUDE = "claude-haiku-4-5-20251001"


def claude_models(simulator_url: str) -> list[dict[str, Any]]:
    """One Anthropic model on the simulator's Anthropic face."""
    params = {"model": f"anthropic/{CLAUDE}", "api_base": simulator_url, "api_key": PROVIDER_KEY}
    return [{"model_name": CLAUDE, "litellm_params": params}]


GEMINI = "gemini-2.5-flash"  # in litellm's price map with batch prices


def gemini_models(simulator_url: str) -> list[dict[str, Any]]:
    """One Gemini model on the simulator's Gemini face (the v1beta root is the api_base litellm takes)."""
    params = {"model": f"gemini/{GEMINI}", "api_base": simulator_url + "/v1beta", "api_key": PROVIDER_KEY}
    return [{"model_name": GEMINI, "litellm_params": params}]


VERTEX_BUCKET = "batchgate-vertex"  # the bucket tests create on their GCS server (tests/support/gcs_server.py)


def vertex_models(simulator_url: str) -> list[dict[str, Any]]:
    """One Gemini model on the simulator's Vertex AI face, as LiteLLM users declare it (`vertex_ai/...`, project,
    location) plus the batch bucket; the face takes PROVIDER_KEY as its access token. The GCS server is named by
    STORAGE_EMULATOR_HOST."""
    params = {
        "model": f"vertex_ai/{GEMINI}", "api_base": simulator_url, "api_key": PROVIDER_KEY,
        "vertex_project": "proj-1", "vertex_location": "us-central1", "batch_gcs_bucket": f"gs://{VERTEX_BUCKET}/jobs",
    }  # fmt: skip
    return [{"model_name": GEMINI, "litellm_params": params}]
