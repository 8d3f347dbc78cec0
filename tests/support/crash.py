"""Crash-test helpers: a worker process (`python -m proxy worker --burst`) stopped at a named stage and killed -9
there, then another run to the end.

The fault-injection point BATCHGATE_TEST_PAUSE_AT makes a worker stop at the stage (proxy/worker/context.py) and
write it to BATCHGATE_TEST_PAUSE_MARKER, so the test kills it exactly there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from proxy.providers.litellm_completion import import_litellm
from proxy.worker.runner import Worker
from tests.support.deferred_env import DeferredEnv
from tests.support.servers import child_environment

FAST_LEASES = {"worker": {"lease": 1.5, "tick": 0.1, "poll_interval_min": 0.2, "poll_interval_max": 0.5,
                          "safety_margin": 2}}  # fmt: skip
# Every stage a worker can be killed at, in the order one batch passes them (proxy/worker/context.py).
STAGES = ("before_upload", "after_upload", "before_create", "after_create", "while_polling", "during_ingest")


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


async def wait_for_exit(process: subprocess.Popen[bytes], within: float = 300) -> None:
    """`within` is a hang detector too: a worker importing litellm to translate 500 results takes minutes on a
    loaded machine."""
    end = time.monotonic() + within
    while process.poll() is None:
        if time.monotonic() > end:
            process.kill()
            process.wait()
            raise AssertionError(f"worker did not finish: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
    assert process.returncode == 0, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]


async def kill_at(env: DeferredEnv, marker: Path, stage: str, host_dir: Path | None = None) -> None:
    """A worker run until it reaches `stage`, then killed -9 there."""
    worker = start_worker(env, pause_at=stage, marker=marker, host_dir=host_dir)
    try:
        await wait_for_marker(marker, worker)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        worker.stderr.close()  # type: ignore[union-attr]


async def run_to_the_end(env: DeferredEnv, host_dir: Path | None = None) -> None:
    """A worker run until nothing is left. With no `host_dir` it runs in this process, on the env's runtime (the
    same `Worker.run(burst=True)` as `batchgate worker --burst`): the run that is never killed needs no process of
    its own, and a worker start costs seconds of imports (litellm's too, for the translated faces)."""
    if host_dir is None:
        # litellm imported first, off the loop, once per test process: its import would stall the worker's loop past
        # a short lease
        await asyncio.to_thread(import_litellm)
        await asyncio.wait_for(Worker(env.runtime, worker_id="run-to-the-end").run(burst=True), 300)
        return
    worker = start_worker(env, host_dir=host_dir)
    try:
        await wait_for_exit(worker)
    finally:
        worker.stderr.close()  # type: ignore[union-attr]


async def kill_at_then_recover(
    env: DeferredEnv, tmp_path: Path, stage: str, *, hosts: tuple[Path | None, Path | None] = (None, None)
) -> None:
    """A worker killed -9 at `stage`, then a second one run to the end (each on its own host when given)."""
    await kill_at(env, tmp_path / "paused", stage, hosts[0])
    await run_to_the_end(env, hosts[1])


async def kill_at_each_stage_then_recover(env: DeferredEnv, tmp_path: Path, stages: Sequence[str] = STAGES) -> None:
    """One batch carried through `stages` by a worker per stage, each killed -9 there (the next takes over what the
    last one left), then a last worker run to the end."""
    for stage in stages:
        await kill_at(env, tmp_path / f"paused-{stage}", stage)
    await run_to_the_end(env)
