"""The in-process stack the deferred-lane benchmarks share: a private redis-server, the simulated upstream as a child
process, and batchgate's runtime built over a config written for them (tests/support/deferred_env.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.runtime import Runtime, build_runtime
from proxy.settings import Settings
from tests.support.deferred_env import write_config
from tests.support.servers import RedisServer, free_port, wait_for_http


@dataclass
class LocalStack:
    runtime: Runtime
    simulator_url: str


@contextlib.asynccontextmanager
async def local_stack(
    scratch: Path, *, simulator_args: Sequence[str] = (), **sections: dict[str, Any]
) -> AsyncIterator[LocalStack]:
    """Redis under `scratch`, `batchgate simulate-upstream [simulator_args]` on a free port, and the runtime over a
    config with `sections` (e.g. `batching=...`, `worker=...`); all stopped on leaving."""
    redis = RedisServer(scratch / "redis").start()
    port = free_port()
    simulator = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
        [sys.executable, "-m", "proxy", "simulate-upstream", "--port", str(port), *simulator_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        simulator_url = f"http://127.0.0.1:{port}"
        wait_for_http(simulator_url + "/_sim/health", timeout=180)  # a loaded machine imports slowly
        path, config = write_config(scratch, simulator_url, **sections)
        runtime = build_runtime(Settings(config=path, redis_url=redis.url), config)
        try:
            yield LocalStack(runtime, simulator_url)
        finally:
            await runtime.providers.aclose()
            await runtime.redis.aclose()
    finally:
        simulator.terminate()
        simulator.wait()
        redis.stop()
