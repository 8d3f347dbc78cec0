"""`/v1/deferred` over real HTTP: read, list and cancel jobs; each caller sees only its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.auth import Caller
from proxy.jobs.service import accept as accept_job
from proxy.policy.decision import Decision
from proxy.runtime import Runtime, build_runtime
from proxy.settings import load_config
from proxy.simulator.engine import expected_content
from proxy.store.records import JobView
from proxy.worker.process import run_in_app
from tests.support.deferred_env import chat_body
from tests.support.stack import MASTER_KEY, TEAM_KEYS, Stack, running_stack
from tests.support.waiting import wait_until

ALPHA = Caller("alpha-key", "alpha")
BETA = Caller("beta-key", "beta")


def headers(team: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TEAM_KEYS[team]}"}


@pytest.fixture
async def accepting(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[Stack, Runtime]]:
    with running_stack(tmp_path, redis_url) as stack:  # no worker: jobs stay queued
        runtime = build_runtime(stack.settings, load_config(stack.config_path))
        yield stack, runtime
        await runtime.providers.aclose()
        await runtime.redis.aclose()


async def accept(runtime: Runtime, caller: Caller, text: str) -> JobView:
    decision = Decision(deferred=True, lane="batch", rule="test", reason="test")
    return await accept_job(runtime.store, runtime.config, caller, chat_body("gpt-4o-mini", text), decision)


async def test_a_caller_reads_lists_and_cancels_only_its_own_jobs(accepting: tuple[Stack, Runtime]) -> None:
    stack, runtime = accepting
    mine = [await accept(runtime, ALPHA, f"mine {i}") for i in range(3)]
    theirs = await accept(runtime, BETA, "theirs")
    async with httpx.AsyncClient(base_url=stack.url) as http:
        got = (await http.get(f"/v1/deferred/{mine[0].id}", headers=headers("alpha"))).json()
        assert got["id"] == mine[0].id
        assert (got["object"], got["status"], got["model"], got["lane"]) == (
            "chat.completion.deferred", "queued", "gpt-4o-mini", "batch"
        )  # fmt: skip
        for job_id in (theirs.id, "dfr_0123456789_00000000000000000000", "nonsense", "dfr_zz_1"):
            response = await http.get(f"/v1/deferred/{job_id}", headers=headers("alpha"))
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "invalid_request_error"
        assert (await http.delete(f"/v1/deferred/{theirs.id}", headers=headers("alpha"))).status_code == 404

        listed = (await http.get("/v1/deferred", params={"limit": 2}, headers=headers("alpha"))).json()
        assert [job["id"] for job in listed["data"]] == [mine[2].id, mine[1].id]
        assert listed["has_more"]
        rest = (await http.get("/v1/deferred", params={"after": listed["last_id"]}, headers=headers("alpha"))).json()
        assert [job["id"] for job in rest["data"]] == [mine[0].id]
        assert not rest["has_more"]

        cancelled = await http.delete(f"/v1/deferred/{mine[1].id}", headers=headers("alpha"))
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        only = (await http.get("/v1/deferred", params={"status": "cancelled"}, headers=headers("alpha"))).json()
        assert [job["id"] for job in only["data"]] == [mine[1].id]
        beta = (await http.get("/v1/deferred", headers=headers("beta"))).json()
        assert [job["id"] for job in beta["data"]] == [theirs.id]
        for bad in ({"limit": 0}, {"limit": 101}, {"status": "done"}):
            assert (await http.get("/v1/deferred", params=bad, headers=headers("alpha"))).status_code == 400
        assert (await http.get("/v1/deferred")).status_code == 401


async def test_the_master_key_lists_every_teams_jobs(accepting: tuple[Stack, Runtime]) -> None:
    """docs/configuration.md: the master key sees every job."""
    stack, runtime = accepting
    alpha = [await accept(runtime, ALPHA, f"alpha {i}") for i in range(2)]
    beta = await accept(runtime, BETA, "beta")
    master = {"authorization": f"Bearer {MASTER_KEY}"}
    async with httpx.AsyncClient(base_url=stack.url) as http:
        listed = (await http.get("/v1/deferred", headers=master)).json()
        assert [job["id"] for job in listed["data"]] == [beta.id, alpha[1].id, alpha[0].id]
        first = (await http.get("/v1/deferred", params={"limit": 1}, headers=master)).json()
        assert [job["id"] for job in first["data"]] == [beta.id]
        assert first["has_more"]
        assert (await http.delete(f"/v1/deferred/{alpha[0].id}", headers=master)).status_code == 200
        cancelled = (await http.get("/v1/deferred", params={"status": "cancelled"}, headers=master)).json()
        assert [job["id"] for job in cancelled["data"]] == [alpha[0].id]
        only_alpha = (await http.get("/v1/deferred", headers=headers("alpha"))).json()
        assert [job["id"] for job in only_alpha["data"]] == [alpha[1].id, alpha[0].id]


async def test_the_in_process_worker_answers_and_get_returns_the_completion(tmp_path: Path, redis_url: str) -> None:
    with running_stack(tmp_path, redis_url, background=[run_in_app]) as stack:
        runtime = build_runtime(stack.settings, load_config(stack.config_path))
        try:
            view = await accept(runtime, ALPHA, "answer me")
        finally:
            await runtime.providers.aclose()
            await runtime.redis.aclose()
        async with httpx.AsyncClient(base_url=stack.url) as http:

            async def completed() -> dict[str, Any] | None:
                job: dict[str, Any] = (await http.get(f"/v1/deferred/{view.id}", headers=headers("alpha"))).json()
                return job if job["status"] == "completed" else None

            job = await wait_until(completed, timeout=30, what="the job completed")
            assert job["lane"] == "batch"
            assert job["response"]["object"] == "chat.completion"
            content = job["response"]["choices"][0]["message"]["content"]
            assert content == expected_content(chat_body("gpt-4o-mini", "answer me"))
            refused = await http.delete(f"/v1/deferred/{view.id}", headers=headers("alpha"))
            assert refused.status_code == 409
