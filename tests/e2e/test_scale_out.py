"""Scale-out on one Redis: 2 API processes and 2 worker processes (real subprocesses) under a mixed workload.

Worker A takes the work first (worker B is frozen meanwhile) and pauses, by fault injection, inside its first
submission: it holds a group's flush lease and a batch's lease, with sync-lane calls in flight. Then it gets
SIGTERM: it must exit 0 after its drain time and hand everything back, so that worker B finishes it at once, not
when A's leases or claims would lapse. API 1 gets SIGTERM while synchronous calls are in flight: they must finish,
and the process exit 0. In the end every accepted job is answered once with its own answer, and every batch-lane
job went upstream in exactly one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import redis.asyncio
import yaml

from proxy.simulator.engine import expected_content
from proxy.store import keys
from proxy.store.records import FINAL_STATUSES
from proxy.store.store import Store
from tests.support.servers import child_environment, free_port, wait_for_http
from tests.support.stack import MASTER_KEY, MODELS, config_document, simulator_server
from tests.support.waiting import wait_until

BATCH_JOBS = 300  # deferred through the batch lane, across both models and both APIs
SYNC_LANE_JOBS = 12  # deferred with a deadline too short for a batch: the workers' sync lane answers them
DIRECT_CALLS = 16  # plain synchronous calls, half of them in flight on API 1 when it gets SIGTERM
SYNC_LATENCY = 8.0  # seconds the simulator takes per synchronous answer
DRAIN = 1.0  # worker.drain_timeout: shorter than a sync call, so worker A must hand its calls back
LEASE = 60.0  # long, so that waiting for a lease to lapse could not pass the deadlines below


class Processes:
    """Child processes with their output in log files; whatever is still running at the end is killed."""

    def __init__(self, directory: Path, environment: dict[str, str]) -> None:
        self.directory = directory
        self.environment = environment
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        with (self.directory / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "proxy", *args],
                env={**self.environment, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    async def stop(self, name: str, *, within: float) -> float:
        """SIGTERM; the seconds it took to exit. Fails unless it exits 0 within `within` seconds."""
        process = self.started[name]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        while process.poll() is None:
            if time.monotonic() - started > within:
                raise AssertionError(f"{name} did not exit within {within}s after SIGTERM:\n{self.log(name)[-3000:]}")
            await asyncio.sleep(0.05)
        assert process.returncode == 0, f"{name} exited {process.returncode}:\n{self.log(name)[-3000:]}"
        return time.monotonic() - started

    def kill_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@contextlib.contextmanager
def processes(directory: Path, environment: dict[str, str]) -> Iterator[Processes]:
    running = Processes(directory, environment)
    try:
        yield running
    finally:
        running.kill_all()


def api_client(port: int) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(timeout=60)
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER_KEY, max_retries=0, http_client=http
    )


def chat_body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def defer(
    apis: list[openai.AsyncOpenAI], body: dict[str, Any], *, deadline: str, key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Accept a deferred call through the first API that answers; the Idempotency-Key makes a resend safe."""
    for api in apis:
        try:
            raw = await api.chat.completions.with_raw_response.create(
                model=body["model"], messages=body["messages"],
                extra_headers={"X-Batch-Deadline": deadline, "Idempotency-Key": key},
            )  # fmt: skip
        except openai.APIConnectionError:
            continue  # that API is shutting down: another one takes the call
        assert raw.status_code == 202, raw.http_response.text
        job: dict[str, Any] = raw.http_response.json()
        return body, job
    raise AssertionError("no API accepted the call")


async def provider_batch_lines(simulator_url: str) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Every batch the simulated provider has, and how often each custom_id appears across their result files."""
    lines: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=simulator_url + "/v1", headers={"authorization": "Bearer x"}) as upstream:
        batches: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = (await upstream.get("/batches", params=params)).json()
            batches.extend(page["data"])
            if not page["has_more"]:
                break
            params["after"] = batches[-1]["id"]
        for batch in batches:
            # each line of a batch comes back once, in its output or error file; the input file is deleted once
            # the batch has ended
            assert (await upstream.get(f"/files/{batch['input_file_id']}")).status_code == 404
            for file_id in (batch["output_file_id"], batch["error_file_id"]):
                if file_id:
                    content = await upstream.get(f"/files/{file_id}/content")
                    lines.update(orjson.loads(line)["custom_id"] for line in content.content.splitlines() if line)
    return batches, lines


async def test_two_apis_and_two_workers_lose_nothing_and_drain_on_sigterm(
    tmp_path: Path, redis_url: str, repo_root: Path
) -> None:
    simulator = {"turnaround_s": 1.5, "validating_s": 0.1, "finalizing_s": 0.1, "sync_latency_s": SYNC_LATENCY}
    worker_section = {"lease": LEASE, "drain_timeout": DRAIN, "tick": 0.1, "poll_interval_min": 0.2,
                      "poll_interval_max": 0.5, "safety_margin": 2, "sync_concurrency": 16}  # fmt: skip
    client = redis.asyncio.Redis.from_url(redis_url)
    store = Store.create(client)
    with simulator_server(**simulator) as upstream:
        config_path = tmp_path / "config.yaml"
        document = config_document(upstream.url, worker=worker_section, delivery={"default": "async"})
        config_path.write_text(yaml.safe_dump(document))
        environment = child_environment()
        for name in [name for name in environment if name.startswith("BATCHGATE_")]:
            del environment[name]
        environment.update({"BATCHGATE_REDIS_URL": redis_url, "BATCHGATE_CONFIG": str(config_path),
                            "BATCHGATE_METRICS_PORT": "0", "PYTHONPATH": str(repo_root)})  # fmt: skip
        ports = [free_port(), free_port()]
        with processes(tmp_path, environment) as children:
            for n, port in enumerate(ports, start=1):
                children.start(f"api{n}", "serve", "--no-worker", "--port", str(port))
            for port in ports:
                await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/readyz", timeout=60)
            api1, api2 = api_client(ports[0]), api_client(ports[1])
            try:
                await run_workload(Scene(children, store, upstream.url, api1, api2, tmp_path))
            finally:
                await api1.close()
                await api2.close()
                await client.aclose()


@dataclass
class Scene:
    children: Processes
    store: Store
    simulator_url: str
    api1: openai.AsyncOpenAI
    api2: openai.AsyncOpenAI
    tmp_path: Path


async def run_workload(scene: Scene) -> None:
    children, store, api1, api2 = scene.children, scene.store, scene.api1, scene.api2
    # 0. Worker B starts first and is frozen (SIGSTOP) while idle, so that its start-up time, long on a loaded
    #    machine, is not spent while worker A's calls are in flight below.
    metrics_port = free_port()
    worker_b = children.start("worker_b", "worker", BATCHGATE_METRICS_PORT=str(metrics_port))
    await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{metrics_port}/metrics", timeout=60)
    worker_b.send_signal(signal.SIGSTOP)

    # 1. Deferred calls through both APIs, while no worker takes work.
    limit = asyncio.Semaphore(32)
    serial = itertools.count()

    async def one(
        api: openai.AsyncOpenAI, body: dict[str, Any], deadline: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        async with limit:
            other = api2 if api is api1 else api1
            return await defer([api, other], body, deadline=deadline, key=f"k{next(serial)}")

    batch_bodies = [chat_body(MODELS[i % 2], f"batch question {i}") for i in range(BATCH_JOBS)]
    sync_bodies = [chat_body(MODELS[0], f"urgent question {i}") for i in range(SYNC_LANE_JOBS)]
    accepted = await asyncio.gather(
        *(one(api1 if i % 2 else api2, body, "1h") for i, body in enumerate(batch_bodies)),
        *(one(api1 if i % 2 else api2, body, "6s") for i, body in enumerate(sync_bodies)),
    )
    lanes = Counter(job["lane"] for _, job in accepted)
    assert lanes == {"batch": BATCH_JOBS, "sync": SYNC_LANE_JOBS}, lanes

    # 2. Worker A: it claims the sync-lane calls (each takes SYNC_LATENCY upstream), then pauses inside its first
    #    submission, holding that group's flush lease and the new batch's lease.
    marker = scene.tmp_path / "paused"
    pause = {"BATCHGATE_TEST_PAUSE_AT": "after_upload", "BATCHGATE_TEST_PAUSE_MARKER": str(marker)}
    children.start("worker_a", "worker", **pause)
    sync_tag = keys.group_tag(MODELS[0])

    async def a_holds_everything() -> bool:
        assert children.started["worker_a"].poll() is None, children.log("worker_a")
        in_flight = await store.client.zcard(keys.sync_inflight(sync_tag))
        return marker.exists() and in_flight == SYNC_LANE_JOBS

    await wait_until(
        a_holds_everything, timeout=60, what="worker A paused mid-submission with its sync calls in flight"
    )

    # 3. Worker B wakes up; plain synchronous calls go in flight on both APIs.
    worker_b.send_signal(signal.SIGCONT)
    direct_bodies = [chat_body(MODELS[i % 2], f"direct call {i}") for i in range(DIRECT_CALLS)]
    direct = [
        asyncio.create_task(
            (api1 if i % 2 else api2).chat.completions.create(model=body["model"], messages=body["messages"])
        )
        for i, body in enumerate(direct_bodies)
    ]

    async def direct_calls_upstream() -> bool:
        # a call the simulator is answering has been accepted by its API: stopping that API must drain, not drop it
        async with httpx.AsyncClient(base_url=scene.simulator_url) as simulator:
            in_flight = (await simulator.get("/_sim/in-flight")).json()
        return sum(count for text, count in in_flight.items() if text.startswith("direct call")) == DIRECT_CALLS

    await wait_until(direct_calls_upstream, timeout=30, what="every direct call in flight upstream")
    assert not any(task.done() for task in direct), "the direct calls must still be in flight"

    # 4. SIGTERM to worker A (mid-submission, calls in flight) and to API 1 (calls in flight), together.
    sigterm_at = time.monotonic()
    in_flight = await store.client.zcard(keys.sync_inflight(sync_tag))
    assert in_flight == SYNC_LANE_JOBS, "worker A's sync calls must be in flight when it is stopped"
    a_took, api1_took = await asyncio.gather(
        children.stop("worker_a", within=DRAIN + 10), children.stop("api1", within=SYNC_LATENCY + 15)
    )
    assert "sync calls handed back" in children.log("worker_a"), children.log("worker_a")
    assert "submission handed back" in children.log("worker_a"), children.log("worker_a")
    completions = await asyncio.gather(*direct)
    for body, completion in zip(direct_bodies, completions, strict=True):
        assert completion.choices[0].message.content == expected_content(body)

    # 5. More deferred calls while API 1 is gone: they go through API 2.
    late_bodies = [chat_body(MODELS[i % 2], f"late question {i}") for i in range(20)]
    accepted += await asyncio.gather(*(one(api1, body, "1h") for body in late_bodies))

    # 6. Worker B alone finishes everything: A's handed-back calls and submission at once, not after a lease.
    ids = [job["id"] for _, job in accepted]

    async def all_final() -> bool:
        assert children.started["worker_b"].poll() is None, children.log("worker_b")
        views = await store.jobs.get_many(ids)
        return all(view is not None and view.status in FINAL_STATUSES for view in views)

    await wait_until(all_final, timeout=LEASE / 2, what="every job answered by worker B")
    finished_in = time.monotonic() - sigterm_at
    assert finished_in < LEASE / 2, "the handed-back work waited for a lease to lapse"
    for _, job in accepted[:: len(accepted) // 10]:
        fetched = (await api2.get(f"/deferred/{job['id']}", cast_to=httpx.Response)).json()
        assert fetched["status"] == "completed"
        assert fetched["response"]["object"] == "chat.completion"
    await children.stop("worker_b", within=DRAIN + 10)
    await children.stop("api2", within=15)

    # 7. Every job answered once with its own answer; every batch-lane job in exactly one provider batch line.
    views = await store.jobs.get_many(ids)
    for (body, job), view in zip(accepted, views, strict=True):
        assert view is not None
        assert view.status == "completed", view
        assert view.lane == job["lane"]
        assert view.response is not None
        assert orjson.loads(view.response)["choices"][0]["message"]["content"] == expected_content(body)
    batches, lines = await provider_batch_lines(scene.simulator_url)
    batch_ids = {job["id"] for _, job in accepted if job["lane"] == "batch"}
    assert set(lines) == batch_ids
    assert set(lines.values()) == {1}, "a job was sent in two batch lines"
    ours = [batch["metadata"]["batchgate_batch"] for batch in batches]
    assert len(ours) == len(set(ours)), "a batch was submitted twice"
    print(f"\nscale-out: worker A exited {a_took:.1f}s after SIGTERM, API 1 {api1_took:.1f}s; "
          f"everything answered {finished_in:.1f}s after SIGTERM; {len(batches)} batches")  # fmt: skip
