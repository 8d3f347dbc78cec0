"""A policy rule's `max_wait`, end to end over HTTP: the rule decides, the job is written with it, the in-process
worker flushes by it, and a job re-queued after a failed batch line keeps it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.store.keys import group_tag
from proxy.worker.process import run_in_app
from tests.integration.test_worker_batches import wait_until
from tests.support.stack import TEAM_KEYS, Stack, running_stack

QUEUE_WAIT = "10m"  # the queues' own max_wait: nothing in these tests may wait for it
RULE_WAIT = 0.5
POLICY = {
    "rules": [
        {"name": "quick", "match": {"models": ["gpt-4o-mini"]}, "lane": "batch", "max_wait": RULE_WAIT},
        {"name": "patient", "match": {"models": ["gpt-5-mini"]}, "lane": "batch"},
    ]
}
AUTH = {"authorization": f"Bearer {TEAM_KEYS['alpha']}"}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(
        tmp_path,
        redis_url,
        background=[run_in_app],
        batching={"max_wait": QUEUE_WAIT, "turnaround_estimate": "5s"},
        policy=POLICY,
    ) as running:
        yield running


async def defer(http: httpx.AsyncClient, model: str, text: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    # a rule defers the call: without an opt-in the connection would be held (docs/delivery.md)
    response = await http.post("/v1/chat/completions", json=body, headers={**AUTH, "prefer": "respond-async"})
    assert response.status_code == 202, response.text
    assert response.headers["x-batchgate-decision"].startswith("lane=batch")
    job: dict[str, Any] = response.json()
    return job


async def awaited(http: httpx.AsyncClient, job_id: str, seconds: int = 25) -> dict[str, Any]:
    response = await http.get(f"/v1/deferred/{job_id}", headers={**AUTH, "prefer": f"wait={seconds}"}, timeout=60)
    job: dict[str, Any] = response.json()
    return job


def upstream_batches(stack: Stack) -> list[dict[str, Any]]:
    with stack.simulator() as client:
        found: list[dict[str, Any]] = client.get("/v1/batches", headers={"authorization": "Bearer x"}).json()["data"]
        return found


async def test_a_rules_max_wait_flushes_its_jobs_while_the_queues_own_wait_holds_others(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        patient = await defer(http, "gpt-5-mini", "no hurry")
        quick = await defer(http, "gpt-4o-mini", "soon, please")
        done = await awaited(http, quick["id"])
        assert (done["status"], done["lane"]) == ("completed", "batch")
        still = (await http.get(f"/v1/deferred/{patient['id']}", headers=AUTH)).json()
        assert still["status"] == "queued"  # its queue waits 10m; the worker has run a whole batch meanwhile
    (batch,) = upstream_batches(stack)
    assert (batch["metadata"]["batchgate_group"], batch["request_counts"]["total"]) == (group_tag("gpt-4o-mini"), 1)


async def test_a_job_requeued_after_a_failed_line_is_due_again_by_its_rules_max_wait(stack: Stack) -> None:
    stack.configure_simulator(line_500_rate=1.0)  # the first batch's line fails (transient: the job goes again)
    async with httpx.AsyncClient(base_url=stack.url) as http:
        quick = await defer(http, "gpt-4o-mini", "again, soon")

        async def first_batch_created() -> bool:
            return len(upstream_batches(stack)) == 1

        await wait_until(first_batch_created)
        stack.configure_simulator(line_500_rate=0.0)  # a batch copies the knobs when created: the next one works
        done = await awaited(http, quick["id"], seconds=30)
        assert done["status"] == "completed"
    assert sorted(batch["request_counts"]["total"] for batch in upstream_batches(stack)) == [1, 1]
