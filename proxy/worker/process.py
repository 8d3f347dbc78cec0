"""Running the worker: inside the API process (`batchgate serve`) or on its own (`batchgate worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Config, Settings
from proxy.worker.runner import Worker


async def run_in_app(runtime: Runtime) -> None:
    """A background service of the API process: runs until the app shuts down (the task is cancelled)."""
    await Worker(runtime).run()


async def run_worker_process(settings: Settings, config: Config, *, burst: bool = False) -> None:
    """`batchgate worker [--burst]`: SIGTERM/SIGINT stop it gracefully (in-flight sync calls finish)."""
    runtime = build_runtime(settings, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await Worker(runtime).run(burst=burst, stop=stop)
    finally:
        await close_runtime(runtime)


run_worker = run_worker_process
