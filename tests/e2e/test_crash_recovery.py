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

import orjson
import pytest

from proxy.simulator.engine import expected_content
from tests.support.deferred_env import DeferredEnv, chat_body, deferred_env
from tests.support.servers import child_environment

FAST_LEASES = {"worker": {"lease": 1.5, "tick": 0.1, "poll_interval_min": 0.2, "poll_interval_max": 0.5,
                          "safety_margin": 2}}  # fmt: skip


def start_worker(
    env: DeferredEnv, *, pause_at: str | None = None, marker: Path | None = None
) -> subprocess.Popen[bytes]:
    environment = child_environment()
    environment.pop("BATCHGATE_TEST_PAUSE_AT", None)
    if pause_at is not None and marker is not None:
        environment["BATCHGATE_TEST_PAUSE_AT"] = pause_at
        environment["BATCHGATE_TEST_PAUSE_MARKER"] = str(marker)
    command = [sys.executable, "-m", "proxy", "worker", "--burst", "--config", str(env.config_path),
               "--redis-url", env.redis_url]  # fmt: skip
    return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_for_marker(marker: Path, process: subprocess.Popen[bytes], within: float = 30) -> None:
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
        marker = tmp_path / "paused"
        first = start_worker(env, pause_at=stage, marker=marker)
        try:
            await wait_for_marker(marker, first)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            first.stderr.close()  # type: ignore[union-attr]
        second = start_worker(env)
        try:
            await wait_for_exit(second)
        finally:
            second.stderr.close()  # type: ignore[union-attr]

        finished = await env.store.jobs.get_many([view.id for view in views])
        for body, view in zip(bodies, finished, strict=True):
            assert view is not None
            assert view.status == "completed", view
            assert view.response is not None
            assert orjson.loads(view.response)["choices"][0]["message"]["content"] == expected_content(body)
        batches = env.provider_batches()
        ours = [batch["metadata"]["batchgate_batch"] for batch in batches]
        assert len(set(ours)) == len(ours), "a batch was created twice"
        assert sum(batch["request_counts"]["total"] for batch in batches) == jobs, "a job was sent twice"
