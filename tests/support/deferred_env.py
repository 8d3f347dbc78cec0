"""Deferred-job test helpers: a Runtime on the simulated upstream, jobs accepted through the store, checks upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from proxy.auth import Caller
from proxy.policy.decision import Decision, ResolvedLane
from proxy.routes.deferred import accept_deferred
from proxy.runtime import Runtime, build_runtime
from proxy.settings import Config, Settings
from proxy.store.records import JobView
from proxy.store.store import Store, store_of
from tests.support.stack import config_document, simulator_server

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
        deadline = datetime.now(UTC) + timedelta(seconds=deadline_in) if deadline_in is not None else None
        decision = Decision(deferred=True, lane=lane, rule="test", reason="test", deadline=deadline)
        return await accept_deferred(self.runtime, caller, body, decision, idempotency_key=idempotency_key)


def chat_body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def write_config(tmp_path: Path, simulator_url: str, **sections: Any) -> tuple[Path, Config]:
    path = tmp_path / "config.yaml"
    document = config_document(simulator_url, **sections)
    path.write_text(yaml.safe_dump(document))
    return path, Config.model_validate(document)


@contextlib.asynccontextmanager
async def deferred_env(
    tmp_path: Path, redis_url: str, *, simulator: dict[str, Any] | None = None, **sections: Any
) -> AsyncIterator[DeferredEnv]:
    knobs = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1, **(simulator or {})}
    with simulator_server(**knobs) as upstream:
        async with env_on(tmp_path, redis_url, upstream.url, **sections) as env:
            yield env


@contextlib.asynccontextmanager
async def env_on(tmp_path: Path, redis_url: str, simulator_url: str, **sections: Any) -> AsyncIterator[DeferredEnv]:
    """A Runtime on a simulated upstream that is already running (sections may point models elsewhere)."""
    path, config = write_config(tmp_path, simulator_url, **sections)
    runtime = build_runtime(Settings(config=path, redis_url=redis_url), config)
    try:
        yield DeferredEnv(runtime, store_of(runtime), simulator_url, path, redis_url)
    finally:
        await runtime.providers.aclose()
        await runtime.redis.aclose()
