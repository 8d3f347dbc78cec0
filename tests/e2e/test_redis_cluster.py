"""The whole deferred flow on a local 3-master Redis Cluster (`redis+cluster://`), over real HTTP.

Four models give four queue groups whose hash tags fall on more than one master, so the multi-key scripts, the
pipelines that span slots, the leases and the pub/sub messages below really cross the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from proxy.app import create_app
from proxy.pricing import Cost, Usage
from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Settings, load_config
from proxy.simulator.engine import expected_content
from proxy.store import keys
from proxy.worker.runner import Worker
from tests.support.cluster import RedisClusterServers, running_cluster
from tests.support.servers import ServerThread
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, TEAM_KEYS, config_document, simulator_server

MODELS = ("gpt-4o-mini", "gpt-5-mini", "gpt-4o", "gpt-4.1-mini")
JOBS_PER_MODEL = 12
FAST_SIMULATOR = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}


@dataclass
class ClusterStack:
    api: openai.AsyncOpenAI
    other_team: openai.AsyncOpenAI
    runtime: Runtime  # a second process's view of the cluster: the worker runs on it
    simulator_url: str

    def provider_batches(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = httpx.get(self.simulator_url + "/v1/batches", params=params, headers={"authorization": "Bearer x"})
            found.extend(page.json()["data"])
            if not page.json()["has_more"]:
                return found
            params["after"] = found[-1]["id"]

    def configure_simulator(self, **knobs: Any) -> None:
        httpx.patch(self.simulator_url + "/_sim/config", json=knobs, timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


@pytest.fixture
def cluster_url(cluster: RedisClusterServers) -> str:
    for url in cluster.node_urls:
        with redis.Redis.from_url(url) as node:
            node.flushall()
    return cluster.url


@contextlib.asynccontextmanager
async def cluster_stack(tmp_path: Path, cluster_url: str, **sections: Any) -> AsyncIterator[ClusterStack]:
    """The simulator, the API (no worker) on the cluster, and a second Runtime on the cluster for the worker."""
    with simulator_server(**FAST_SIMULATOR) as upstream:
        models = [
            {"model_name": name,
             "litellm_params": {"model": f"openai/{name}", "api_base": upstream.url + "/v1", "api_key": PROVIDER_KEY}}
            for name in MODELS
        ]  # fmt: skip
        document = config_document(upstream.url, model_list=models, delivery={"default": "async"}, **sections)
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(document))
        settings = Settings(config=config_path, redis_url=cluster_url, worker=False)
        with ServerThread(create_app(settings, load_config(config_path))) as server:
            runtime = build_runtime(settings, load_config(config_path))
            options: dict[str, Any] = {"base_url": server.url + "/v1", "max_retries": 0, "timeout": 30}
            api = openai.AsyncOpenAI(api_key=MASTER_KEY, **options)
            other_team = openai.AsyncOpenAI(api_key=TEAM_KEYS["beta"], **options)
            try:
                yield ClusterStack(api, other_team, runtime, upstream.url)
            finally:
                await api.close()
                await other_team.close()
                await close_runtime(runtime)


async def defer(client: openai.AsyncOpenAI, model: str, text: str, **headers: str) -> dict[str, Any]:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers={"X-Batch-Deadline": "1h", **headers}
    )
    assert raw.status_code == 202, raw.http_response.text
    job: dict[str, Any] = raw.http_response.json()
    assert raw.headers["location"] == f"/v1/deferred/{job['id']}"
    return job


async def get_job(client: openai.AsyncOpenAI, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/deferred/{job_id}", cast_to=httpx.Response)
    found: dict[str, Any] = response.json()
    return found


def chat_body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def test_the_deferred_flow_runs_on_a_three_master_cluster(
    tmp_path: Path, cluster: RedisClusterServers, cluster_url: str
) -> None:
    async with cluster_stack(tmp_path, cluster_url) as stack:
        masters = {cluster.master_holding(keys.pending(keys.group_tag(model))) for model in MODELS}
        assert len(masters) >= 2, "the queue groups all hash to one master: the test would prove nothing"

        texts = {model: [f"{model} question {i}" for i in range(JOBS_PER_MODEL)] for model in MODELS}
        accepted = await asyncio.gather(*(defer(stack.api, model, text) for model in MODELS for text in texts[model]))
        bodies = [chat_body(model, text) for model in MODELS for text in texts[model]]
        assert {job["status"] for job in accepted} == {"queued"}

        again = await defer(stack.api, MODELS[0], "idempotent", **{"Idempotency-Key": "k-1"})
        repeat = await defer(stack.api, MODELS[0], "idempotent", **{"Idempotency-Key": "k-1"})
        assert repeat["id"] == again["id"]
        accepted.append(again)
        bodies.append(chat_body(MODELS[0], "idempotent"))

        doomed = await defer(stack.api, MODELS[1], "cancel me")
        cancelled = (await stack.api.delete(f"/deferred/{doomed['id']}", cast_to=httpx.Response)).json()
        assert cancelled["status"] == "cancelled"
        with pytest.raises(openai.NotFoundError):
            await get_job(stack.other_team, accepted[0]["id"])

        store = stack.runtime.store
        waiter = asyncio.create_task(store.jobs.wait_final(accepted[-1]["id"], 60))  # woken by cluster pub/sub
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.wait_for(Worker(stack.runtime, worker_id="cluster-worker").run(burst=True), 60)
        woken = await asyncio.wait_for(waiter, 10)
        assert woken is not None
        assert woken.status == "completed"
        assert time.monotonic() - started < 45

        for job, body in zip(accepted, bodies, strict=True):
            got = await get_job(stack.api, job["id"])
            assert got["status"] == "completed", got
            assert got["lane"] == "batch"
            assert got["response"]["choices"][0]["message"]["content"] == expected_content(body)
        assert (await get_job(stack.api, doomed["id"]))["status"] == "cancelled"

        lines = [batch["request_counts"]["total"] for batch in stack.provider_batches()]
        assert sorted(lines) == sorted([JOBS_PER_MODEL] * (len(MODELS) - 1) + [JOBS_PER_MODEL + 1])
        listed = (await stack.api.get("/deferred", cast_to=httpx.Response, options={"params": {"limit": 100}})).json()
        assert len(listed["data"]) == len(accepted) + 1  # the cancelled one too

        holders: dict[int, set[str]] = {}
        for port, names in cluster.keys_per_master().items():
            holders[port] = {name.split("}")[0].removeprefix("bg:{") for name in names if name.startswith("bg:{")}
        groups_on = [port for port, tags in holders.items() if tags & {keys.group_tag(m) for m in MODELS}]
        assert len(groups_on) >= 2, holders


async def test_a_batch_that_cannot_make_the_deadline_is_rescued_on_the_cluster(
    tmp_path: Path, cluster_url: str
) -> None:
    async with cluster_stack(tmp_path, cluster_url) as stack:
        stack.configure_simulator(turnaround_s=120.0)  # the batch stalls: only the rescuer can keep the deadline
        raw = await stack.api.chat.completions.with_raw_response.create(
            model=MODELS[2], messages=[{"role": "user", "content": "rescue me"}],
            extra_headers={"X-Batch-Deadline": "9s"},
        )  # fmt: skip
        job = raw.http_response.json()
        assert job["lane"] == "batch"
        await asyncio.wait_for(Worker(stack.runtime, worker_id="rescuer").run(burst=True), 60)
        got = await get_job(stack.api, job["id"])
        assert got["status"] == "completed", got
        assert (got["lane"], got.get("rescued")) == ("sync", True)
        assert got["response"]["choices"][0]["message"]["content"] == expected_content(
            chat_body(MODELS[2], "rescue me")
        )
        batches = stack.provider_batches()
        assert len(batches) == 1
        assert batches[0]["status"] in ("cancelling", "cancelled")


async def test_the_savings_ledger_adds_up_across_masters(tmp_path: Path, cluster_url: str) -> None:
    async with cluster_stack(tmp_path, cluster_url) as stack:
        ledger = stack.runtime.accounting
        now = datetime.now(UTC)
        for n, model in enumerate(MODELS):
            for lane in ("batch", "sync"):
                recorded = await ledger.record(
                    team="alpha", model=model, lane=lane, outcome="completed", at=now,
                    cost=Cost(Decimal("0.004"), Decimal("0.002")), usage=Usage(prompt_tokens=10 + n),
                    job_id=keys.new_job_id(model),
                )  # fmt: skip
                assert recorded
        report = await ledger.report(now.replace(minute=0, second=0, microsecond=0), now.replace(minute=59))
        totals = report.total()
        assert totals.requests == 2 * len(MODELS)
        assert totals.prompt_tokens == 2 * sum(10 + n for n in range(len(MODELS)))
        assert report.by("model").keys() == set(MODELS)
